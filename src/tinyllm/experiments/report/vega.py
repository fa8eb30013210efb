"""`dvc plots show` pages that work offline: DVC's HTML page with vega inlined."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

from ..rows import ROOT

PLOT_TEMPLATES = ROOT / "experiments" / "plots"


def dvc_plots_html(root: Path, out: Path, csvs: dict[str, Path], html_template: Path) -> list[Path]:
    """`dvc plots show` of the report's plot files with the offline template (vega inlined)."""
    made = []
    specs = {"accuracy": ("grouped_bars.json", "row", "accuracy"), "alpha": ("alpha_curve.json", "alpha", "accuracy")}
    for name, path in csvs.items():
        template, x, y = specs[name]
        dest = out / f"{name}_html"
        if not path.is_relative_to(root):
            print(f"{path}: outside the DVC repo {root}, no `dvc plots show` page")
            continue
        cmd = [
            str(Path(sys.executable).parent / "dvc"),
            "plots",
            "show",
            str(path.relative_to(root)),
            "-t",
            str(PLOT_TEMPLATES / template),
            "-x",
            x,
            "-y",
            y,
            "--html-template",
            str(html_template),
            "-o",
            str(dest),
        ]
        res = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
        if res.returncode != 0:
            print(f"dvc plots show ({name}) failed: {res.stderr.strip()[-500:]}")
            continue
        made.append(dest / "index.html")
    return made


def build_offline_template(vendor: Path) -> Path:
    """vendor/dvc-plots-offline.html: DVC's page with vega, vega-lite and vega-embed inlined from
    the npm packs in vendor/npm (`make vendor-vega`). It has no `{scripts}` placeholder, so the CDN
    <script> tags dvc-render would insert there never reach the page."""
    libs = []
    packages = (("vega", "vega.min.js"), ("vega-lite", "vega-lite.min.js"), ("vega-embed", "vega-embed.min.js"))
    for pkg, member in packages:
        packs = sorted((vendor / "npm").glob(f"{pkg}-[0-9]*.tgz"))
        if not packs:
            raise SystemExit(f"{vendor / 'npm'}/{pkg}-*.tgz missing: run `make vendor-vega`")
        with tarfile.open(packs[-1]) as tar:
            js = tar.extractfile(f"package/build/{member}").read().decode("utf-8")
        js = js.replace("</script", "<\\/script")  # a literal end tag inside the JS would close the element
        libs.append(f"<!-- {packs[-1].name} (BSD-3-Clause) -->\n<script>{js}</script>")
    page = (
        '<!DOCTYPE html>\n<html>\n<head>\n<meta charset="utf-8">\n<title>DVC Plot (offline)</title>\n'
        + "\n".join(libs)
        + "\n<style>table { border-spacing: 15px; }</style>\n</head>\n<body>\n"
        "{plot_divs}\n</body>\n</html>\n"
    )
    dest = vendor / "dvc-plots-offline.html"
    dest.write_text(page, encoding="utf-8")
    return dest
