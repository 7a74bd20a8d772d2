"""Reading a training's progress out of its Ray driver log: the newest step line wins, noise and cut lines
are skipped, and no figure is ever made up."""

from __future__ import annotations

import json

from tandem.platform.kubernetes.ray_progress import TrainingProgress, last_progress, logs_from_tail


def step_line(step: int, total: int = 40, **extra: object) -> str:
    event = {
        "stage": "training",
        "step": step,
        "totalSteps": total,
        "loss": round(2.0 - step / 40, 4),
        "tokensPerSecond": 850.0,
        "etaSeconds": (total - step) * 2,
        **extra,
    }
    return json.dumps(event)


# What a Ray driver log of `python -m tandem.workloads.train` looks like: the driver's own lines, Ray's
# notices, and rank 0's lines relayed with a coloured worker prefix (and, now and then, Ray's dedup suffix).
LOG = "\n".join(
    [
        "2026-05-01 10:00:00,000\tINFO worker.py:1 -- Connecting to existing Ray cluster at 10.0.0.4",
        json.dumps({"stage": "training-start", "examples": 44, "evalExamples": 4, "baseModel": "/m"}),
        "\x1b[36m(RayTrainWorker pid=311, ip=10.0.0.5)\x1b[0m Setting up process group for: env:// [rank=0]",
        f"\x1b[36m(RayTrainWorker pid=311, ip=10.0.0.5)\x1b[0m {step_line(11)}",
        "(RayTrainWorker pid=311, ip=10.0.0.5) {not json at all}",
        f"(RayTrainWorker pid=311, ip=10.0.0.5) {step_line(12)} [repeated 2x across cluster]",
        "Training finished iteration 12 at 2026-05-01 10:01:00. Total running time: 1min 0s",
        '{"unrelated": "json object"}',
        "[1, 2, 3]",
    ]
)


def test_the_newest_step_line_wins_over_noise_and_prefixes() -> None:
    assert last_progress(LOG) == TrainingProgress(
        step=12, total_steps=40, loss=1.7, eval_loss=None, tokens_per_second=850.0, eta_seconds=56
    )


def test_a_line_cut_short_at_the_end_is_skipped() -> None:
    partial = step_line(13)[:30]
    progress = last_progress(LOG + "\n(RayTrainWorker pid=311) " + partial)
    assert progress is not None and progress.step == 12


def test_no_step_printed_yet_means_no_progress() -> None:
    assert last_progress("") is None
    assert last_progress(LOG.split("\n\x1b[36m(RayTrainWorker pid=311, ip=10.0.0.5)\x1b[0m {")[0]) is None
    # A resumed run names its step, but not the figures of one: nothing to report until the next step.
    assert last_progress(json.dumps({"stage": "resumed", "step": 10, "checkpoint": "step-10"})) is None


def test_a_result_after_the_steps_adds_the_final_evaluation_loss() -> None:
    result = {"result": {"adapterPath": "/a", "metrics": {"steps": 40, "eval_loss": 0.91, "loss": 0.5}}}
    log = "\n".join([step_line(39), step_line(40), json.dumps(result)])
    assert last_progress(log) == TrainingProgress(
        step=40, total_steps=40, loss=1.0, eval_loss=0.91, tokens_per_second=850.0, eta_seconds=0
    )


def test_a_result_without_steps_says_nothing_about_this_run() -> None:
    # The workload found the adapter already trained: its manifest's metrics are of an earlier run.
    skipped = {"result": {"skipped": True, "metrics": {"steps": 40, "eval_loss": 0.91}}}
    assert last_progress(json.dumps(skipped)) is None
    assert last_progress(json.dumps({"result": {"error": "DatasetEmpty", "message": "no examples"}})) is None


def test_figures_of_the_wrong_type_are_not_taken() -> None:
    assert last_progress(json.dumps({"stage": "training", "step": True, "totalSteps": 4})) is None
    assert last_progress(json.dumps({"stage": "training", "step": "3"})) is None
    progress = last_progress(json.dumps({"stage": "training", "step": 3, "loss": "nan?", "totalSteps": 4.5}))
    assert progress == TrainingProgress(step=3)
    assert progress.figures() == {"step": 3}  # unstated figures are left out, not written as null


def test_status_figures_use_the_status_field_names() -> None:
    progress = last_progress(step_line(5, evalLoss=1.5))
    assert progress is not None
    assert progress.figures() == {
        "step": 5,
        "totalSteps": 40,
        "loss": 1.875,
        "evalLoss": 1.5,
        "tokensPerSecond": 850.0,
        "etaSeconds": 70,
    }


def test_the_end_of_a_logs_body_decodes_to_its_whole_last_lines_wherever_it_was_cut() -> None:
    # Escapes that a cut can split or that look like a line break: non-ASCII (json.dumps writes \uXXXX),
    # quotes, a tab, literal backslash-n (a Windows path), a line ending in a backslash, an empty line.
    lines = ["café ☕", 'a "quoted"\tword', step_line(1), "C:\\new\\path\\", "", "\\\\n", step_line(2), "end"]
    body = json.dumps({"logs": "\n".join(lines)}).encode()
    newest_step = body.rindex(b"\\n" + json.dumps(step_line(2)).encode()[1:6])
    for cut in range(len(body)):
        text = logs_from_tail(body[cut:])
        kept = text.split("\n") if text else []
        # Always whole lines, exactly as written, and always the newest ones.
        assert kept == lines[len(lines) - len(kept) :], cut
        if cut < newest_step:  # a cut at the break itself leaves that line's start unknown
            progress = last_progress("\n".join(kept))
            assert progress is not None and progress.step == 2, cut
