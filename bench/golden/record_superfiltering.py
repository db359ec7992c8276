"""Record Superfiltering's golden selections by running the official `code_ifd/put_analysis_to_data.py` and
`code_ifd/select_data.py` unchanged on analysis files we write.

Not run by CI: it needs the official code (tianyi-lab/Superfiltering, outside this repo), numpy and tqdm
(tests/golden/superfiltering/README.md has the command). Each analysis line is what
`data_analysis.py` writes for a row: `{}` for an empty output, `ppl = [0, alone, 0, conditioned]`
otherwise, with 0 where its try/except swallowed an error; equal IFDs, IFDs at and above 1 and
errors on either side are in every set.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

OUT = Path(__file__).resolve().parents[2] / "tests" / "golden" / "superfiltering" / "select_data.json"
RATES = [0.0001, 0.0002, 0.0004, 0.001]  # sample_num = int(52002 * rate): 5, 10, 20, 52


def analyses() -> dict[str, list[dict]]:
    """Per set, one analysis line per row: "ok" (alone, conditioned), "empty" ({}), "error_alone",
    "error_cond", "error_both" (the zeros data_analysis.py writes when scoring raised)."""

    def ok(alone: float, cond: float) -> dict:
        return {"ppl": [0, alone, 0, cond], "loss": [0, 0.0, 0, 0.0]}

    def err(alone: float, cond: float) -> dict:
        return {"ppl": [0, alone, 0, cond], "loss": [0, 0, 0, 0]}

    ties = [ok(10.0, 5.0), ok(8.0, 4.0), ok(20.0, 25.0), err(0, 7.0), ok(4.0, 2.0), ok(9.0, 9.0), {},
            ok(6.0, 3.0), err(12.0, 0), ok(3.0, 1.5), ok(5.0, 4.0), err(0, 0), ok(2.0, 1.0), ok(10.0, 8.0),
            ok(7.0, 2.1), {}, ok(100.0, 80.0), err(0, 0), ok(1.5, 1.2), ok(30.0, 24.0)]
    # many rows sharing few IFD values (halves and quarters are exact in binary): the cut falls in a tie
    grid = [ok(8.0, 8.0 * f) for f in (0.5, 0.25, 0.75, 0.5, 0.25, 0.5, 0.75, 0.75, 0.5, 0.25) * 3]
    grid[4] = err(0, 3.0)
    grid[17] = {}
    grid[22] = err(5.0, 0)
    # near ties: IFDs a few ulps apart, and values just below and at 1
    near = [ok(1.0, 0.9), ok(3.0, 2.7), ok(1.0, 0.9000000000000001), ok(7.0, 6.3), ok(1.0, 1.0),
            ok(1.0, 0.9999999999999999), err(0, 0), ok(10.0, 9.0), ok(0.1, 0.09), ok(2.0, 1.8), {},
            ok(1.0, 1.0000000000000002), ok(5.0, 4.5), ok(4.0, 3.6), err(2.0, 0), ok(0.3, 0.27)] * 2
    return {"ties_and_errors": ties, "grid_ties": grid, "near_ties": near}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("official", type=Path, help="checkout of tianyi-lab/Superfiltering")
    ap.add_argument("--python", default=sys.executable, help="interpreter with numpy and tqdm")
    args = ap.parse_args()
    code = args.official / "code_ifd"
    record = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name, lines in analyses().items():
            rows = [{"id": i, "instruction": f"task {i}", "input": "", "output": f"answer {i}"}
                    for i in range(len(lines))]
            (work / "data.json").write_text(json.dumps(rows))
            (work / "analysis.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
            subprocess.run([args.python, str(code / "put_analysis_to_data.py"), "--pt_data_path",
                            str(work / "analysis.jsonl"), "--json_data_path", str(work / "data.json"),
                            "--json_save_path", str(work / "with_ifd.json")],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
            selections = {}
            for rate in RATES:
                subprocess.run([args.python, str(code / "select_data.py"), "--json_data_path",
                                str(work / "with_ifd.json"), "--json_save_path", str(work / "selected.json"),
                                "--sample_rate", str(rate)],
                               check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
                selections[str(rate)] = [r["id"] for r in json.loads((work / "selected.json").read_text())]
            with_ifd = json.loads((work / "with_ifd.json").read_text())
            record[name] = {"analysis": lines, "ifd_ppl": [r["ifd_ppl"] for r in with_ifd], "selected": selections}
            print(name, {k: len(v) for k, v in selections.items()})
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
