"""Kernel stacks as an interactive flame graph: one SVG, no other tool needed.

flamegraph.pl and inferno are not packaged where netprof runs, so netprof draws its own: a
self-contained SVG (inline script, no network) with flamegraph.pl's interactions -- click a
frame to zoom into it, click the section title (or press Escape) to zoom out, `Search` (or
Ctrl-F) to highlight frames matching a regular expression with the share they cover.

Drops and retransmits are different events and are never added up: each kind gets its own
graph (section) with its own total and unit, pod and reason as its first two levels.

Every name comes from a pod label, a drop reason or a kernel symbol: it is made inert and
XML-escaped, and reaches the page only as text content, never as script or markup. The
script reads names and counts from the DOM; nothing in it is generated from capture data.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from xml.sax.saxutils import escape, quoteattr

from ..inert import inert
from .folded import EVENT_KINDS, stack_kind, stack_path

WIDTH = 1200
ROW_PX = 17
SECTION_GAP_PX = 30
TITLE_PX = 24
MIN_WIDTH_PX = 0.3   # narrower frames are not drawn (their parent's width still counts them)


@dataclass
class _Node:
    name: str
    count: int = 0
    children: dict[str, "_Node"] = field(default_factory=dict)

    def add(self, path: list[str], count: int) -> None:
        self.count += count
        if path:
            child = self.children.setdefault(path[0], _Node(path[0]))
            child.add(path[1:], count)

    def depth(self) -> int:
        return 1 + max((child.depth() for child in self.children.values()), default=0)


# Each kind of event: its section title and the unit of its counts.
KINDS = {"drops": ("Packet drops", "drops"), "retransmits": ("TCP retransmits", "retransmits")}
assert tuple(KINDS) == EVENT_KINDS


def _trees(doc: dict) -> dict[str, _Node]:
    trees: dict[str, _Node] = {}
    for stack in doc.get("stacks", []):
        count = int(stack["count"])
        if count <= 0:
            continue
        kind = stack_kind(stack)
        trees.setdefault(kind, _Node(f"all {KINDS[kind][1]}")).add(stack_path(stack), count)
    return trees


def _color(name: str, level: int) -> str:
    digest = hashlib.blake2b(name.encode(), digest_size=2).digest()
    vary = digest[0] / 255
    if level == 0:
        return "rgb(180,180,200)"
    if level == 1:   # the pod
        return f"rgb({90 + int(40 * vary)},{150 + int(40 * vary)},{210 + int(30 * vary)})"
    if level == 2:   # the reason
        return f"rgb({200 + int(40 * vary)},{120 + int(40 * vary)},{190 + int(30 * vary)})"
    return f"rgb({205 + int(50 * vary)},{int(90 + 130 * (digest[1] / 255))},{int(40 * vary)})"


def _frames(node: _Node, total: int, x: int, level: int, top_px: int, unit: str, out: list[str]) -> None:
    width_px = WIDTH * node.count / total
    if width_px < MIN_WIDTH_PX:
        return
    name = inert(node.name, 400)
    share = 100 * node.count / total
    title = f"{name} ({node.count:,} {unit}, {share:.2f}%)"
    y = top_px + level * ROW_PX
    out.append(
        f'<g class="f" data-x="{x / total:.9f}" data-w="{node.count / total:.9f}" data-level="{level}" '
        f'data-count="{node.count}"><title>{escape(title)}</title>'
        f'<rect x="{WIDTH * x / total:.2f}" y="{y}" width="{width_px:.2f}" height="{ROW_PX - 1}" '
        f'fill="{_color(node.name, level)}" rx="2"/>'
        f'<text x="{WIDTH * x / total + 3:.2f}" y="{y + ROW_PX - 5}">{escape(name)}</text></g>')
    offset = x
    for child in sorted(node.children.values(), key=lambda c: (-c.count, c.name)):
        _frames(child, total, offset, level + 1, top_px, unit, out)
        offset += child.count


_STYLE = """
text { font: 12px ui-monospace, monospace; fill: #000; pointer-events: none; }
.title { font: bold 15px sans-serif; cursor: pointer; pointer-events: all; }
.hint { font: 11px sans-serif; fill: #555; }
.f rect { stroke: #fff; stroke-width: 0.5; cursor: pointer; }
.f.hidden { display: none; }
.f.ancestor rect { opacity: 0.55; }
.f.match rect { fill: rgb(230,0,230); }
#search { font: 12px sans-serif; cursor: pointer; pointer-events: all; fill: #06c; }
"""

# Reads everything from the DOM (data-* attributes, text content): no capture data is in it.
_SCRIPT = r"""
(function () {
  var W = %(width)d, CHAR_PX = 7.2;
  var svg = document.documentElement;
  function frames(section) { return Array.prototype.slice.call(section.querySelectorAll('g.f')); }
  function label(g) {
    var rect = g.querySelector('rect'), text = g.querySelector('text');
    var name = g.getAttribute('data-name');
    if (name === null) { name = text.textContent; g.setAttribute('data-name', name); }
    var room = Math.floor((parseFloat(rect.getAttribute('width')) - 6) / CHAR_PX);
    text.textContent = room < 3 ? '' : (name.length <= room ? name : name.slice(0, room - 2) + '..');
    text.setAttribute('x', parseFloat(rect.getAttribute('x')) + 3);
  }
  function zoom(section, target) {
    var zx = target ? parseFloat(target.getAttribute('data-x')) : 0;
    var zw = target ? parseFloat(target.getAttribute('data-w')) : 1;
    var zl = target ? parseInt(target.getAttribute('data-level'), 10) : 0;
    frames(section).forEach(function (g) {
      var x = parseFloat(g.getAttribute('data-x')), w = parseFloat(g.getAttribute('data-w'));
      var level = parseInt(g.getAttribute('data-level'), 10), rect = g.querySelector('rect');
      var inside = x >= zx - 1e-12 && x + w <= zx + zw + 1e-12;
      var above = level < zl && x <= zx + 1e-12 && x + w >= zx + zw - 1e-12;
      g.classList.remove('hidden', 'ancestor');
      if (above) {
        g.classList.add('ancestor'); rect.setAttribute('x', 0); rect.setAttribute('width', W);
      } else if (inside && level >= zl) {
        rect.setAttribute('x', (x - zx) / zw * W); rect.setAttribute('width', w / zw * W);
      } else {
        g.classList.add('hidden');
      }
      label(g);
    });
    section.setAttribute('data-zoomed', target ? target.getAttribute('data-name') || '' : '');
  }
  function search(pattern) {
    var re; try { re = new RegExp(pattern); } catch (e) { return; }
    Array.prototype.slice.call(svg.querySelectorAll('g.section')).forEach(function (section) {
      var matched = 0, covered = -1;
      frames(section).sort(function (a, b) {
        return parseFloat(a.getAttribute('data-x')) - parseFloat(b.getAttribute('data-x'));
      }).forEach(function (g) {
        var hit = pattern !== '' && re.test(g.getAttribute('data-name'));
        g.classList.toggle('match', hit);
        var x = parseFloat(g.getAttribute('data-x')), w = parseFloat(g.getAttribute('data-w'));
        if (hit && x + 1e-12 >= covered) { matched += w; covered = x + w; }
      });
      var info = section.querySelector('.matched');
      info.textContent = pattern === '' ? '' : 'matched ' + (100 * matched).toFixed(1) + '%%';
      section.setAttribute('data-matched', matched.toFixed(6));
    });
  }
  Array.prototype.slice.call(svg.querySelectorAll('g.section')).forEach(function (section) {
    frames(section).forEach(function (g) {
      label(g);
      g.addEventListener('click', function () { zoom(section, g); });
    });
    section.querySelector('.title').addEventListener('click', function () { zoom(section, null); });
  });
  document.getElementById('search').addEventListener('click', function () {
    var pattern = window.prompt('Search frames (regular expression):', '');
    if (pattern !== null) search(pattern);
  });
  document.addEventListener('keydown', function (e) {
    if (e.key === 'Escape') {
      Array.prototype.slice.call(svg.querySelectorAll('g.section')).forEach(function (s) { zoom(s, null); });
      search('');
    } else if ((e.ctrlKey || e.metaKey) && e.key === 'f') {
      e.preventDefault(); document.getElementById('search').dispatchEvent(new Event('click'));
    }
  });
  // A link such as file.svg#search=udp_ or #zoom=<frame name> opens in that state.
  var hash = decodeURIComponent(window.location.hash.slice(1));
  if (hash.indexOf('search=') === 0) search(hash.slice(7));
  if (hash.indexOf('zoom=') === 0) {
    var name = hash.slice(5);
    Array.prototype.slice.call(svg.querySelectorAll('g.section')).forEach(function (section) {
      var hit = frames(section).filter(function (g) { return g.getAttribute('data-name') === name; })[0];
      if (hit) zoom(section, hit);
    });
  }
  svg.setAttribute('data-ready', String(svg.querySelectorAll('g.f').length));
})();
"""


def flamegraph_svg(doc: dict, title: str = "netprof kernel stacks") -> str:
    trees = _trees(doc)
    parts: list[str] = []
    top = 40
    for kind in KINDS:
        tree = trees.get(kind)
        if tree is None:
            continue
        heading, unit = KINDS[kind]
        frames: list[str] = []
        _frames(tree, tree.count, 0, 0, top + TITLE_PX, unit, frames)
        parts.append(
            f'<g class="section" data-kind="{kind}" data-total="{tree.count}">'
            f'<text class="title" x="0" y="{top + 16}">{escape(heading)}: {tree.count:,} {unit} '
            f'(click a frame to zoom, here to reset)</text>'
            f'<text class="matched hint" x="{WIDTH}" y="{top + 16}" text-anchor="end"></text>'
            + "".join(frames) + "</g>")
        top += TITLE_PX + tree.depth() * ROW_PX + SECTION_GAP_PX
    if not parts:
        parts.append(f'<text class="hint" x="0" y="{top + 16}">No kernel stacks in this capture '
                     "(no drops or retransmits were sampled).</text>")
        top += 40
    header = (f'<text class="title" x="0" y="20">{escape(inert(title, 200))}</text>'
              f'<text id="search" x="{WIDTH}" y="20" text-anchor="end">Search</text>')
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="{WIDTH}" height="{top}" '
        f'viewBox="0 0 {WIDTH} {top}" data-generator={quoteattr("netprof")}>\n'
        f"<style>{_STYLE}</style>\n{header}\n" + "\n".join(parts) +
        f"\n<script><![CDATA[{_SCRIPT % {'width': WIDTH}}]]></script>\n</svg>\n")
