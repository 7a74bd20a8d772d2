"""A small handbook in mixed formats, written by the tests (no downloaded data)."""

from __future__ import annotations

from pathlib import Path

TRAVEL_MD = """# Travel policy
Employees of Quillfeather book trains for trips under 600 km.

## Travel desk
The travel desk code is QF-TRV-7. Bookings need two working days.
"""

LEAVE_HTML = """<html><head><title>Leave policy</title></head><body>
<h1>Leave</h1><p>Every employee has 27 days of paid leave.</p>
<h2>Requests</h2><p>Leave requests go to the #time-off channel.</p>
<script>var tracking = "not text";</script></body></html>
"""

CAFE_TXT = "The cafeteria opens at 08:15 and serves oat porridge on Tuesdays.\n"


def write_pdf(path: Path, pages: list[str], title: str) -> None:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_title(title)
    pdf.set_font("Helvetica", size=12)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 8, text)
    pdf.output(str(path))


def write_handbook(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "travel.md").write_text(TRAVEL_MD)
    (root / "leave.html").write_text(LEAVE_HTML)
    (root / "cafe.txt").write_text(CAFE_TXT)
    write_pdf(
        root / "expenses.pdf",
        [
            "Expense policy. Receipts above 40 euros need a manager signature.",
            "The expense portal is called Ledgerly.",
        ],
        "Expense policy",
    )
    return root
