"""The HTML report's stylesheet and colours, kept apart from the markup that uses them."""

from __future__ import annotations

# Reviewer colours in the timeline (a colour-blind-safe set, Okabe-Ito without black);
# failed and stopped calls take colours no reviewer has.
PALETTE = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#6a3d9a")
FAILED = "#c62828"
STOPPED = "#9e9e9e"

# Scripts are forbidden outright: the page needs none, and the code under review is
# printed on it, so a mistake in escaping must not become script execution.
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; script-src 'none'; base-uri 'none'"

CSS = """
:root { --fg: #1f2328; --muted: #59636e; --line: #d1d9e0; --bg: #ffffff; --panel: #f6f8fa;
        --critical: #8e1519; --high: #c62828; --medium: #9a6700; --low: #1a7f37; --info: #59636e;
        --confirmed: #fff1e5; }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 1100px; padding: 1.5rem; color: var(--fg); background: var(--bg);
       font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
h1 { margin: 0 0 .25rem; font-size: 1.7rem; }
h2 { margin: 2rem 0 .75rem; padding-bottom: .3rem; border-bottom: 1px solid var(--line); }
h3 { margin: 1.25rem 0 .5rem; }
code, pre, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 13px; }
.meta, .note { color: var(--muted); }
nav a { margin-right: 1rem; }
.risk { display: inline-block; padding: .2rem .8rem; border-radius: 4px; color: #fff; font-weight: 700;
        letter-spacing: .05em; background: var(--info); }
.risk-critical { background: var(--critical); } .risk-high { background: var(--high); }
.risk-medium { background: var(--medium); } .risk-low { background: var(--low); }
.risk-none { background: var(--low); }
.stats { display: grid; grid-template-columns: repeat(auto-fill, minmax(200px, 1fr)); gap: .5rem;
         margin: 1rem 0; }
.stats div { background: var(--panel); border: 1px solid var(--line); border-radius: 6px;
             padding: .5rem .75rem; }
.stats dt { color: var(--muted); font-size: .8rem; text-transform: uppercase; letter-spacing: .04em; }
.stats dd { margin: 0; font-weight: 600; }
.bars { margin: .5rem 0 0; }
.bars div { display: flex; align-items: center; gap: .5rem; margin: .15rem 0; }
.bars span.label { width: 9rem; color: var(--muted); font-size: .85rem; }
.bars span.fill { height: .8rem; border-radius: 2px; background: #0072b2; min-width: 2px; }
.bars span.fill.wall { background: #009e73; }
.sev { display: inline-block; min-width: 4.5rem; text-align: center; padding: 0 .4rem; border-radius: 3px;
       color: #fff; font-size: .8rem; font-weight: 700; text-transform: uppercase; background: var(--info); }
.sev-critical { background: var(--critical); } .sev-high { background: var(--high); }
.sev-medium { background: var(--medium); } .sev-low { background: var(--low); }
.finding { border: 1px solid var(--line); border-left-width: 4px; border-radius: 6px; padding: .75rem 1rem;
           margin: .75rem 0; }
.finding.confirmed { border-left-color: var(--high); }
.finding.potential { border-left-color: var(--line); }
.finding h4 { margin: 0 0 .25rem; font-size: 1rem; }
.finding .tag { font-size: .8rem; color: var(--muted); margin-left: .5rem; }
.finding ul { margin: .25rem 0 .5rem; padding-left: 1.2rem; }
.excerpt { overflow-x: auto; background: var(--panel); border: 1px solid var(--line); border-radius: 6px; }
.excerpt pre { margin: 0; padding: .5rem 0; }
.excerpt .linenos { color: var(--muted); padding: 0 .75rem 0 .5rem; user-select: none; }
.excerpt .hll { display: block; background: #ffebe9; box-shadow: inset 3px 0 0 var(--high); }
body:has(#only-confirmed:checked) .potential { display: none; }
table { border-collapse: collapse; margin: .5rem 0; }
th, td { border: 1px solid var(--line); padding: .25rem .5rem; text-align: left; vertical-align: top; }
thead th { background: var(--panel); }
.matrix td, .matrix thead th { text-align: center; min-width: 2.2rem; }
.matrix th.confirmed, .matrix td.confirmed { background: var(--confirmed); }
.matrix thead th.confirmed { border-top: 3px solid var(--high); }
.matrix td.hit { font-weight: 700; }
.matrix th[scope=row].failed::after { content: " \\26A0"; color: var(--high); }
.legend span { display: inline-flex; align-items: center; gap: .3rem; margin-right: 1rem; font-size: .85rem; }
.legend i { display: inline-block; width: .9rem; height: .9rem; border-radius: 2px; }
svg.timeline { width: 100%; height: auto; font: 11px system-ui, sans-serif; }
svg.timeline .lane { fill: var(--panel); }
svg.timeline .axis { stroke: var(--muted); stroke-width: 1; }
svg.timeline .grid { stroke: var(--line); stroke-width: 1; }
svg.timeline text { fill: var(--muted); }
svg.timeline rect.failed { stroke: #7f0000; stroke-width: 1; }
footer { margin-top: 2rem; color: var(--muted); font-size: .85rem; }
"""
