"""notebook: the one-line repr and the HTML view, read back with html.parser."""

from __future__ import annotations

from html.parser import HTMLParser

from initcheck import notebook
from initcheck.findings import Finding, Severity
from initcheck.probe import ProbeLayer
from initcheck.records import FixDraw, FixResult
from initcheck.report import LayerReport, Report


def layer(name: str, verdict: str = "ok", rms: float | None = 1.0, std: float = 0.05) -> LayerReport:
    return LayerReport(name=name, param="weight", kind="Linear", shape=(4, 4), fan_in=4, fan_out=4, activation="relu",
                       activation_param=None, normalized=False, residual_end=False, is_output=False, scheme="he",
                       gain=2 ** 0.5, recommended_std=0.707, actual_std=std, actual_mean=0.0, variance_ratio=(std / 0.707) ** 2,
                       predicted_rms=rms, verdict=verdict)


def finding(code: str, severity: Severity, layer_name: str, message: str = "too small") -> Finding:
    return Finding(code, severity, layer_name, message, "nn.init.kaiming_normal_(w)")


REPORT = Report(
    "Net", "fx",
    (layer("a", "error IC103,IC202", 0.3), layer("b", "warning IC103", 0.001), layer("c", "ok", None)),
    (finding("IC202", Severity.ERROR, "a.weight"), finding("IC103", Severity.ERROR, "a.weight"),
     finding("IC103", Severity.WARNING, "b.weight"), finding("IC103", Severity.WARNING, "b.weight"),
     finding("IC103", Severity.WARNING, "b.weight"), finding("IC104", Severity.INFO, "c.weight")),
)


class Tree(HTMLParser):
    """Collects elements as (tag, attrs, text) and checks that every tag closes."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str | None], list[str]]] = []
        self.open: list[tuple[str, dict[str, str | None], list[str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        el = (tag, dict(attrs), [])
        self.elements.append(el)
        if tag not in ("br", "line", "polyline"):
            self.open.append(el)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs), []))

    def handle_endtag(self, tag: str) -> None:
        assert self.open and self.open[-1][0] == tag, f"</{tag}> closes {self.open[-1][0] if self.open else 'nothing'}"
        self.open.pop()

    def handle_data(self, data: str) -> None:
        for el in self.open:
            el[2].append(data)

    def find(self, tag: str, **attrs: str) -> list[tuple[str, dict[str, str | None], list[str]]]:
        return [e for e in self.elements if e[0] == tag and all(e[1].get(k) == v for k, v in attrs.items())]


def parse(html: str) -> Tree:
    tree = Tree()
    tree.feed(html)
    tree.close()
    assert not tree.open, [e[0] for e in tree.open]
    return tree


def test_repr_counts_findings():
    assert repr(REPORT) == "<Report Net: 3 weights, 2 errors, 3 warnings, 1 info>"
    clean = Report("Tiny", "fx", (layer("a"),), ())
    assert repr(clean) == "<Report Tiny: 1 weight, 0 errors, 0 warnings>"


def test_html_table_rows_and_verdict_colors():
    tree = parse(REPORT._repr_html_())
    (layers,) = tree.find("table", **{"class": "layers"})
    headers = ["".join(e[2]) for e in tree.find("th")]
    assert headers[:8] == ["layer", "kind", "activation", "scheme", "std", "recommended", "pre rms", "verdict"]
    verdicts = tree.find("td", **{"class": "verdict"})
    assert [v[1]["data-severity"] for v in verdicts] == ["error", "warning", "ok"]
    assert notebook.COLORS[Severity.ERROR] in verdicts[0][1]["style"]
    assert notebook.OK_COLOR in verdicts[2][1]["style"]
    cells = ["".join(e[2]) for e in tree.find("td")]
    assert cells[:6] == ["a.weight", "Linear", "relu", "he", "0.05", "0.707"]
    assert cells[16 + 6] == "-"  # a layer without a prediction shows a dash


def test_html_findings_and_sparkline():
    tree = parse(notebook.report_html(REPORT))
    items = tree.find("li")
    assert [i[1].get("data-code") for i in items] == [f.code for f in REPORT.findings]
    (line,) = tree.find("polyline")
    points = line[1]["points"].split()
    assert len(points) == 2  # the layer without a prediction is left out of the line
    ys = [float(p.split(",")[1]) for p in points]
    assert ys[0] < ys[1]  # SVG y grows downward: rms 0.3 is drawn above 0.001
    assert len(tree.find("line", **{"class": "band"})) == 2


def test_html_escapes_names_and_caps_findings():
    many = tuple(finding("IC103", Severity.WARNING, "x.weight", "<b>std</b> & co") for _ in range(notebook.MAX_FINDINGS + 5))
    report = Report("<Net>", "fx", (layer("x<y"),), many)
    html = report._repr_html_()
    assert "<Net>" not in html and "&lt;Net&gt;" in html and "x&lt;y" in html
    tree = parse(html)
    items = tree.find("li")
    assert len(items) == notebook.MAX_FINDINGS + 1
    assert "5 more" in "".join(items[-1][2])


def test_probe_table_when_probed():
    probe = (ProbeLayer("a.weight", "relu", 0.0, 1.2, 1.0, 0.25, None, 0.1, 0.01),)
    report = Report("Net", "fx", (layer("a"),), (), probe=probe)
    tree = parse(notebook.report_html(report))
    (table,) = tree.find("table", **{"class": "probe"})
    cells = ["".join(e[2]) for e in tree.find("td")]
    assert cells[-7:-1] == ["a.weight", "relu", "1", "1.2", "25%", "-"]
    assert "probed" in repr(report)


def test_fix_report_names_the_reinitialized_weights():
    fixed = FixResult(FixDraw(None, False, 1, False, "why"), reinitialized=("a.weight", "b.weight"))
    report = Report("Net", "fx", (layer("a"),), (), fix=fixed)
    tree = parse(notebook.report_html(report))
    (p,) = tree.find("p", **{"class": "fixed"})
    assert "".join(p[2]) == "reinitialized by fix(): a.weight, b.weight"
