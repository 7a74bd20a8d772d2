"""Reading a question set: JSONL, one question per line, every problem reported with its line number."""

from __future__ import annotations

import json
from pathlib import Path

from .records import Question

REQUIRED = ("question", "answer")
KNOWN = {"question", "answer", "documents", "kind", "tenant"}


class QuestionSetError(ValueError):
    """The question set cannot be used; the message names the file, the line and the field."""


def load_questions(path: Path, tenants: list[str] | None = None) -> list[Question]:
    if not path.is_file():
        raise QuestionSetError(f"{path}: question set not found")
    questions = []
    problems = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            questions.append(parse_line(line, number, tenants))
        except QuestionSetError as e:
            problems.append(f"{path.name}:{e}")
    if problems:
        shown = "; ".join(problems[:5]) + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else "")
        raise QuestionSetError(f"{len(problems)} invalid line(s) in the question set: {shown}")
    if not questions:
        raise QuestionSetError(f"{path}: the question set is empty")
    return questions


def parse_line(line: str, number: int, tenants: list[str] | None = None) -> Question:
    try:
        raw = json.loads(line)
    except json.JSONDecodeError as e:
        raise QuestionSetError(f"{number}: not JSON ({e.msg})") from None
    if not isinstance(raw, dict):
        raise QuestionSetError(f"{number}: expected an object with 'question' and 'answer'")
    for key in REQUIRED:
        if not isinstance(raw.get(key), str) or not raw[key].strip():
            raise QuestionSetError(f"{number}: field '{key}' is missing or not a non-empty string")
    unknown = sorted(set(raw) - KNOWN)
    if unknown:
        raise QuestionSetError(
            f"{number}: unknown field(s) {', '.join(unknown)} (known: {', '.join(sorted(KNOWN))})"
        )
    documents = raw.get("documents", [])
    if not isinstance(documents, list) or not all(isinstance(d, str) and d for d in documents):
        raise QuestionSetError(f"{number}: field 'documents' must be a list of document ids")
    kind = raw.get("kind", "fact" if documents else "other")
    if not isinstance(kind, str) or not kind:
        raise QuestionSetError(f"{number}: field 'kind' must be a non-empty string")
    tenant = raw.get("tenant")
    if tenant is not None and (
        not isinstance(tenant, str) or (tenants is not None and tenant not in tenants)
    ):
        allowed = ", ".join(tenants or [])
        raise QuestionSetError(
            f"{number}: field 'tenant' {tenant!r} is not a tenant of the endpoint ({allowed})"
        )
    if kind == "unanswerable" and documents:
        raise QuestionSetError(f"{number}: an unanswerable question cannot name supporting documents")
    return Question(
        line=number,
        question=raw["question"].strip(),
        reference=raw["answer"].strip(),
        documents=tuple(documents),
        kind=kind,
        tenant=tenant,
    )


def document_matches(reference: str, doc_id: str) -> bool:
    """Whether a question's document reference names this indexed document.

    Indexed ids are `<source>/<path>` (e.g. `handbook/office-locations.html`); a question set may name
    the whole id, the path, or the file name without its extension (`office-locations`), because the
    people writing questions think in documents, not in ids.
    """
    if reference == doc_id:
        return True
    path = doc_id.split("/", 1)[1] if "/" in doc_id else doc_id
    name = path.rsplit("/", 1)[-1]
    stem = name.rsplit(".", 1)[0] if "." in name else name
    return reference in (path, name, stem)


def unknown_documents(questions: list[Question], doc_ids: list[str]) -> dict[str, list[int]]:
    """Document references that match no indexed document, with the lines naming them."""
    unknown: dict[str, list[int]] = {}
    for q in questions:
        for ref in q.documents:
            if not any(document_matches(ref, d) for d in doc_ids):
                unknown.setdefault(ref, []).append(q.line)
    return unknown
