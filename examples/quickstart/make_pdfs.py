"""Write the quickstart handbook's two PDF documents (docs/handbook/*.pdf) with fpdf2.

The PDFs are committed; run this only after editing the text below:

    .venv/bin/python examples/quickstart/make_pdfs.py

The output is deterministic (fixed creation date and producer), so an unchanged script rewrites the
same bytes and `git status` stays clean. Core PDF fonts cover Latin-1 only: keep the text to it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from fpdf import FPDF

HERE = Path(__file__).resolve().parent
OUT = HERE / "docs" / "handbook"
CREATED = datetime(2026, 1, 1, tzinfo=UTC)

# Each document: a title, then sections of (heading, paragraphs); a paragraph starting "- " is a bullet.
Document = tuple[str, list[tuple[str, list[str]]]]

PRODUCT_LINE: Document = (
    "Product line 2027",
    [
        (
            "Our instruments",
            [
                "Quillfeather Instruments designs and builds weather instruments in its Bergen workshop. "
                "The 2027 catalogue has five instruments. Prices are list prices without VAT.",
                "- Stormglass barometer, model QF-B40: 349 EUR",
                "- Cirrus cup anemometer, model QF-A12: 1,280 EUR",
                "- Drizzle tipping-bucket rain gauge, model QF-R7: 89 EUR",
                "- Hygra hygrometer, model QF-H3: 215 EUR",
                "- Nimbus automatic weather station, model QF-WS900: 4,950 EUR",
            ],
        ),
        (
            "Warranty and calibration",
            [
                "Every instrument carries a 3-year warranty; the Nimbus weather station carries 5 years. "
                "Each Stormglass barometer is calibrated in the Bergen lab and ships with a signed "
                "calibration certificate.",
            ],
        ),
        (
            "Discounts and spare parts",
            [
                "Schools and weather clubs receive 20 percent off with the discount code EDU-20. "
                "The replacement cup set for the Cirrus anemometer has the part number SP-A12-C. "
                "Repairs are sent to the Bergen workshop with an RMA number issued by the sales office.",
            ],
        ),
        (
            "Discontinued",
            [
                "The Zephyr wind vane, model QF-V2, was discontinued on 31 January 2026. Spare parts for "
                "it remain available until the end of 2028.",
            ],
        ),
    ],
)

ON_CALL_ROTA: Document = (
    "On-call rota",
    [
        (
            "What on-call covers",
            [
                "Outside the help desk's opening hours, one on-call engineer looks after the weather-data "
                "service and the fleet of Nimbus stations that customers run.",
                "- On-call weeks run from Wednesday 10:00 to the following Wednesday 10:00.",
                "- The handover happens in the #on-call channel, using the handover checklist OC-7.",
                "- The on-call allowance is 310 EUR per week, plus 60 EUR for each call-out at night.",
            ],
        ),
        (
            "Answering an alert",
            [
                "Acknowledge every alert within 15 minutes. An alert that is not acknowledged within "
                "15 minutes escalates to the duty lead, Haakon Vik. Severity codes: SEV-A means data from "
                "all stations is missing; SEV-B means one customer is affected; SEV-C can wait until the "
                "next working day.",
            ],
        ),
        (
            "Rota for January 2027",
            [
                "- Week from 6 January 2027: Ingrid Halvorsen",
                "- Week from 13 January 2027: Tomas Brekke",
                "- Week from 20 January 2027: Aileen McCrae",
                "- Week from 27 January 2027: Oskar Lindqvist",
                "Swaps are allowed when they are posted in #on-call at least 48 hours before the handover "
                "and approved by the duty lead.",
            ],
        ),
    ],
)


def render(document: Document) -> bytes:
    title, sections = document
    pdf = FPDF(format="A4")
    pdf.set_title(title)
    pdf.set_author("Quillfeather Instruments")
    pdf.set_producer("Quillfeather handbook generator")
    pdf.set_creation_date(CREATED)
    pdf.set_margins(20, 20, 20)
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 18)
    pdf.multi_cell(0, 10, title, new_x="LMARGIN", new_y="NEXT")
    for heading, paragraphs in sections:
        pdf.ln(3)
        pdf.set_font("Helvetica", "B", 13)
        pdf.multi_cell(0, 8, heading, new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Helvetica", "", 11)
        for paragraph in paragraphs:
            if paragraph.startswith("- "):
                pdf.set_x(pdf.l_margin + 5)
                pdf.multi_cell(0, 6, "* " + paragraph[2:], new_x="LMARGIN", new_y="NEXT")
            else:
                pdf.multi_cell(0, 6, paragraph, new_x="LMARGIN", new_y="NEXT")
                pdf.ln(1)
    return bytes(pdf.output())


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, document in (("product-line.pdf", PRODUCT_LINE), ("on-call-rota.pdf", ON_CALL_ROTA)):
        path = OUT / name
        path.write_bytes(render(document))
        print(f"wrote {path.relative_to(HERE)} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
