"""The result tables of README.md and docs/*.md, generated from committed `vfi.eval` runs.

Each run's `metrics.json` is kept as `docs/results/<name>.json` with the command, commit and
hardware that produced it (`python docs/tables.py --add <name> <run folder> "<command>"`).
A table in a Markdown file sits between `<!-- table <name> -->` and `<!-- end table -->`;
`python docs/tables.py` rewrites every such block from the JSON, `--check` exits 1 when a
block differs from what the JSON gives (tests/test_docs_tables.py runs it).
"""

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
REPO = DOCS.parent
RESULTS = DOCS / "results"
HARDWARE = "2 CPU cores"
RELEASE = "warp_posterior (release.ckpt)"
MODELS = {  # key in metrics.json: column heading
    RELEASE: "release",
    "rife": "`rife`",
    "blend": "`blend`",
    "classical": "`classical` (DIS)",
    "ffmpeg": "`ffmpeg` (`minterpolate`)",
}
CLIPS = ("bigbuckbunny", "bikes", "carphone_pristine")
VIEWS = {  # RIFE's time-reversed view: run per test set, model label in that run
    data: {
        "release": (f"{data}_gain1", RELEASE),
        "release, `motion_views=2`": (f"{data}_views2", f"{RELEASE} motion_views=2"),
        "`rife model.views=2`": (f"{data}_rife_views2", "rife model.views=2"),
    }
    for data in ("clips", "clips_native")
}
NATIVE_SIZES = {"bigbuckbunny": "1280x720", "bikes": "640x272", "carphone_pristine": "176x144"}
VAL_RUNS = "clips_val,clips_val_x4,clips_val_native,clips_val_native_x4"
TEST_RUNS = "clips,clips_x4,clips_native,clips_native_x4"
BLOCK = re.compile(r"(<!-- table (\S+) -->\n)(.*?)(<!-- end table -->)", re.S)


def load(name: str) -> dict:
    """The committed run `docs/results/<name>.json`: its records keyed by (model, data)."""
    run = json.loads((RESULTS / f"{name}.json").read_text())
    run["by"] = {(r["model"], r["data"]): r for r in run["results"]}
    return run


def metric(run: dict, model: str, data: str, key: str) -> float:
    return run["by"][(model, data)]["metrics"][f"test/{key}"]


def rife_margin(run: dict, model: str, data: str) -> tuple[float, float]:
    """``model`` minus `rife` in the same run on ``data``: (PSNR dB, LPIPS)."""
    return tuple(
        metric(run, model, data, key) - metric(run, "rife", data, key) for key in ("psnr", "lpips")
    )


def clip_names(run: dict, base: str) -> list[str]:
    """The clips (or videos) of a run with ``per_clip``, in alphabetical order."""
    names = {d[len(base) + 2 : -1] for _, d in run["by"] if d.startswith(f"{base} [")}
    clips = [n for n in names if not n.startswith("motion ") and ", " not in n]
    return sorted(clips, key=str.lower)


def subsets(run: dict) -> list[tuple[str, str]]:
    """(row label, data key) for all items, then each clip and its largest-motion bin."""
    base = run["results"][0]["data"].split(" [")[0]
    datas = {d for _, d in run["by"]}
    rows = [(f"all {run['by'][(RELEASE, base)]['items']} items", base)]
    for clip in clip_names(run, base):
        size = f" ({NATIVE_SIZES[clip]})" if base.startswith("clips_native") else ""
        rows.append((f"{clip}{size}", f"{base} [{clip}]"))
        bins = [d for d in datas if d.startswith(f"{base} [{clip}, motion ")]
        if bins:  # the bins come in order easy < medium < hard < extreme
            order = ["easy", "medium", "hard", "extreme"]
            top = max(bins, key=lambda d: order.index(d.split("motion ")[1].split()[0]))
            label = top.split(", ")[1].rstrip("]")
            rows.append((f"{clip}, largest-motion bin ({label})", top))
    return rows


def bold_best(values: list[float], digits: int, higher: bool) -> list[str]:
    """Each value at `digits` decimals, bold where it ties the best after rounding."""
    text = [f"{v:.{digits}f}" for v in values]
    best = (max if higher else min)(float(t) for t in text)
    return [f"**{t}**" if float(t) == best else t for t in text]


def quality(name: str, title: str) -> list[str]:
    """PSNR / LPIPS per model (columns) for all items, each clip and its largest-motion bin."""
    run = load(name)
    lines = ["| " + " | ".join([title, *MODELS.values()]) + " |"]
    lines.append("|---" * (len(MODELS) + 1) + "|")
    for label, data in subsets(run):
        psnr = bold_best([metric(run, m, data, "psnr") for m in MODELS], 2, True)
        lpips = bold_best([metric(run, m, data, "lpips") for m in MODELS], 4, False)
        lines.append(
            f"| {label} | "
            + " | ".join(f"{p} / {q}" for p, q in zip(psnr, lpips, strict=True))
            + " |"
        )
    return lines + ["", source(run)]


def validation(name: str, title: str, extra: dict[str, str]) -> list[str]:
    """PSNR / LPIPS per model (rows) on all items and each clip, and seconds per frame;
    ``extra`` adds the release of other runs (name: row label), e.g. at other sampler settings."""
    run = load(name)
    base = run["results"][0]["data"]
    datas = [base] + [f"{base} [{c}]" for c in CLIPS]
    rows = [(MODELS[RELEASE] + ", K = 1 (default)", run, RELEASE)]
    rows += [(label, load(n), load(n)["results"][0]["model"]) for n, label in extra.items()]
    rows += [(MODELS[m], run, m) for m in MODELS if m != RELEASE]
    cells = {}
    for d in datas:
        psnr = bold_best([metric(r, m, d, "psnr") for _, r, m in rows], 2, True)
        lpips = bold_best([metric(r, m, d, "lpips") for _, r, m in rows], 4, False)
        cells[d] = [f"{p} / {q}" for p, q in zip(psnr, lpips, strict=True)]
    lines = ["| " + " | ".join([title, "all", *CLIPS, "s / frame"]) + " |", "|---" * 6 + "|"]
    for i, (label, r, m) in enumerate(rows):
        seconds = metric(r, m, base, "seconds_per_frame")
        lines.append(
            f"| {label} | " + " | ".join(cells[d][i] for d in datas) + f" | {seconds:.3f} |"
        )
    return lines + ["", source(run)] + [source(load(n)) for n in extra]


def margins(names: str) -> list[str]:
    """Release minus `rife` (PSNR dB / LPIPS) per clip and largest-motion bin, one column per
    run: a positive PSNR and a negative LPIPS margin are wins."""
    runs = [load(n) for n in names.split(",")]
    rows = [{label.split(" (")[0]: data for label, data in subsets(run)} for run in runs]
    heads = [f"`{r['results'][0]['data']}`" for r in runs]
    lines = ["| release - `rife` | " + " | ".join(heads) + " |", "|---" * (len(runs) + 1) + "|"]
    for row in rows[0]:
        cells = []
        for run, data in zip(runs, rows, strict=True):
            dp, dl = rife_margin(run, RELEASE, data[row])
            cells.append(f"{dp:+.3f} dB / {dl:+.5f}")
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return lines + [
        "",
        "(from " + ", ".join(f"`docs/results/{n}.json`" for n in names.split(",")) + ")",
    ]


def option_margins(names: str, before: str, after: str, label: str) -> list[str]:
    """The release minus `rife` (PSNR dB / LPIPS) per clip and largest-motion bin, one column
    per run, before (`<name><before>`) and with an option (`<name><after>`), and the
    comparisons won out of each run's (clip and bin, PSNR and LPIPS)."""
    pairs = [(load(n + before), load(n + after)) for n in names.split(",")]
    heads = [f"`{r['results'][0]['data']}`" for r, _ in pairs]
    lines = ["| release - `rife` | " + " | ".join(heads) + " |", "|---" * (len(pairs) + 1) + "|"]
    won = [[0, 0] for _ in pairs]
    rows = [{lab.split(" (")[0]: data for lab, data in subsets(run)} for run, _ in pairs]
    for row in rows[0]:
        for k, which in enumerate(("", f", {label}")):
            cells = []
            for j, ((before, after), data) in enumerate(zip(pairs, rows, strict=True)):
                dp, dl = rife_margin((before, after)[k], RELEASE, data[row])
                cells.append(f"{dp:+.3f} dB / {dl:+.5f}")
                if not row.startswith("all"):
                    won[j][k] += (dp > 0) + (dl < 0)
            lines.append(f"| {row}{which} | " + " | ".join(cells) + " |")
    lines.append(
        f"| comparisons won (of {2 * (len(rows[0]) - 1)}), before / {label} | "
        + " | ".join(f"{a} / {b}" for a, b in won)
        + " |"
    )
    return lines + ["", *(source(after) for _, after in pairs)]


def view_margins(columns: dict[str, tuple[str, str]]) -> list[str]:
    """Each column's model (heading: (run, model)) minus `rife` in the same run, PSNR dB /
    LPIPS per clip and largest-motion bin, and its seconds per frame over `rife`'s."""
    runs = {head: load(name) for head, (name, _) in columns.items()}
    first = next(iter(runs.values()))
    lines = ["| minus `rife` of the same run | " + " | ".join(columns) + " |"]
    lines.append("|---" * (len(columns) + 1) + "|")
    for label, data in subsets(first):
        cells = []
        for head, (_, model) in columns.items():
            dp, dl = rife_margin(runs[head], model, data)
            cells.append(f"{dp:+.3f} dB / {dl:+.5f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    base = first["results"][0]["data"]
    ratios = [
        metric(runs[h], m, base, "seconds_per_frame")
        / metric(runs[h], "rife", base, "seconds_per_frame")
        for h, (_, m) in columns.items()
    ]
    lines.append("| time per frame / `rife`'s | " + " | ".join(f"{r:.2f}" for r in ratios) + " |")
    names = dict.fromkeys(name for name, _ in columns.values())
    return lines + ["", *(source(load(n)) for n in names)]


def calibration(names: str) -> list[str]:
    """The release's std against its error per clip: Spearman and +-2 sigma coverage."""
    lines = ["| run | Spearman (" + " / ".join(CLIPS) + ") | +-2 sigma coverage |", "|---|---|---|"]
    for name in names.split(","):
        run = load(name)
        base = run["results"][0]["data"]
        rho = " / ".join(f"{metric(run, RELEASE, f'{base} [{c}]', 'spearman'):.2f}" for c in CLIPS)
        cov = " / ".join(
            f"{100 * metric(run, RELEASE, f'{base} [{c}]', 'coverage2'):.1f}%" for c in CLIPS
        )
        lines.append(f"| `{base}` | {rho} | {cov} |")
    return lines + [
        "",
        "(from " + ", ".join(f"`docs/results/{n}.json`" for n in names.split(",")) + ")",
    ]


def cost(names: str) -> list[str]:
    """Seconds per output frame of every model, one row per run (all items)."""
    lines = ["| run | " + " | ".join(MODELS.values()) + " |", "|---" * (len(MODELS) + 1) + "|"]
    for name in names.split(","):
        run = load(name)
        base = run["results"][0]["data"]
        cells = [f"{metric(run, m, base, 'seconds_per_frame'):.3f}" for m in MODELS]
        lines.append(f"| `{base}` | " + " | ".join(cells) + " |")
    return lines + [
        "",
        "(from " + ", ".join(f"`docs/results/{n}.json`" for n in names.split(",")) + ")",
    ]


def source(run: dict) -> str:
    return f"(`{run['command']}`; commit {run['commit'][:7]}, {run['hardware']}, {run['date']})"


TABLES = {
    "clips": lambda: quality("clips", "`data=clips`, tau = 0.5"),
    "clips_x4": lambda: quality("clips_x4", "`data=clips factor=4` (3 inner frames)"),
    "clips_native": lambda: quality("clips_native", "`data=clips_native`, tau = 0.5"),
    "clips_native_x4": lambda: quality("clips_native_x4", "`data=clips_native factor=4`"),
    "clips_val": lambda: validation(
        "clips_val",
        "validation, tau = 0.5",
        {
            "clips_val_k2": "release, K = 2 (the pair and its flip)",
            "clips_val_views2": "release, `motion_views=2`",
            "clips_val_rife_views2": "`rife model.views=2`",
        },
    ),
    "clips_val_native": lambda: validation(
        "clips_val_native",
        "validation at each clip's own size, tau = 0.5",
        {
            "clips_val_native_views2": "release, `motion_views=2`",
            "clips_val_native_rife_views2": "`rife model.views=2`",
        },
    ),
    "footage": lambda: quality("footage", "`data=footage`, tau = 0.5"),
    "footage_x4": lambda: quality("footage_x4", "`data=footage factor=4` (3 inner frames)"),
    "margins": lambda: margins("clips,clips_x4,clips_native,clips_native_x4"),
    "margins_val": lambda: margins("clips_val,clips_val_x4,clips_val_native,clips_val_native_x4"),
    "quadratic_val": lambda: option_margins(
        "clips_val,clips_val_x4,clips_val_native,clips_val_native_x4",
        "_gain1",
        "_quadratic",
        "quadratic",
    ),
    "quadratic": lambda: option_margins(
        "clips,clips_x4,clips_native,clips_native_x4", "_gain1", "_quadratic", "quadratic"
    ),
    "gain_val": lambda: option_margins(VAL_RUNS, "_gain1", "_oneview", "g = 3"),
    "gain": lambda: option_margins(TEST_RUNS, "_gain1", "_oneview", "g = 3"),
    "speed_val": lambda: option_margins(VAL_RUNS, "_nospeed", "_oneview", "V = 8 px"),
    "speed": lambda: option_margins(TEST_RUNS, "_nospeed", "_oneview", "V = 8 px"),
    "reversal_val": lambda: option_margins(VAL_RUNS, "_oneview", "_clamp", "reversal"),
    "reversal": lambda: option_margins(TEST_RUNS, "_oneview", "_clamp", "reversal"),
    "welsch_val": lambda: option_margins(VAL_RUNS, "_clamp", "", "Welsch, V = 4 px"),
    "welsch": lambda: option_margins(TEST_RUNS, "_clamp", "", "Welsch, V = 4 px"),
    "views": lambda: view_margins(VIEWS["clips"]),
    "views_native": lambda: view_margins(VIEWS["clips_native"]),
    "calibration_val": lambda: calibration(
        "clips_val,clips_val_x4,clips_val_native,clips_val_native_x4"
    ),
    "calibration": lambda: calibration("clips,clips_x4,clips_native,clips_native_x4"),
    "cost": lambda: cost("clips_val,clips,clips_x4,clips_native,clips_native_x4"),
}


def render(text: str) -> str:
    """`text` with every table block rebuilt from its JSON."""

    def fill(match: re.Match) -> str:
        if match.group(2) not in TABLES:
            raise SystemExit(f"unknown table {match.group(2)!r}: expected one of {list(TABLES)}")
        return match.group(1) + "\n".join(TABLES[match.group(2)]()) + "\n" + match.group(4)

    return BLOCK.sub(fill, text)


def documents() -> list[Path]:
    return [REPO / "README.md", *sorted(DOCS.glob("*.md"))]


def add(name: str, run_dir: Path, command: str) -> None:
    """Keep a `vfi.eval` run's metrics.json as docs/results/<name>.json with its provenance."""
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=REPO)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    run = {
        "command": command,
        "commit": commit.stdout.strip(),
        "hardware": HARDWARE,
        "date": subprocess.run(
            ["date", "-u", "+%Y-%m-%d"], capture_output=True, text=True
        ).stdout.strip(),
        "results": metrics["results"],
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(run, indent=1) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a table is out of date")
    parser.add_argument("--add", nargs=3, metavar=("NAME", "RUN_DIR", "COMMAND"))
    args = parser.parse_args()
    if args.add:
        add(args.add[0], Path(args.add[1]), args.add[2])
        return 0
    stale = []
    for path in documents():
        text = path.read_text()
        new = render(text)
        if new != text:
            stale.append(path.relative_to(REPO))
            if not args.check:
                path.write_text(new)
    if args.check and stale:
        print(f"tables out of date in {', '.join(map(str, stale))}: run python docs/tables.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
