"""Browser-side parts of the web chat that need no server round trip: the image pane beside the chat and the
history's thumbnails.

- The image pane mirrors the last image of the chat's questions (the image under discussion) into a panel that
  stays in view beside the chat (CSS sticky) and zooms: mouse wheel or +/- buttons, drag to pan, double-click or
  the reset button to fit. It shows the very URL the chat bubble already uses, so no image is served anew.
- Thumbnails: `thumbnail_css` turns {conversation id: JPEG bytes} into one `<style>` that draws each conversation's
  thumbnail before its title in the sidebar radio (embedded as `data:` URIs: no file path is served for them).

    gr.HTML(IMAGE_PANE_HTML, js_on_load=IMAGE_PANE_JS, elem_id="image-pane")
    gr.HTML(thumbnail_css({"3f2a...": jpeg_bytes}), elem_id="thumbs")
"""

from __future__ import annotations

import base64
import html
import re

# The conversation radio's rows: a 40 px square slot before each title (grey until its thumbnail is known). Only
# longhands here: Gradio prefixes app CSS with its container classes, so a `background` shorthand would outrank
# (and blank) the per-conversation background-image rules of `thumbnail_css`.
SIDEBAR_CSS = """
#conversations label > span { display: flex; align-items: center; gap: 8px; }
#conversations label > span::before { content: ""; flex: 0 0 40px; height: 40px; border-radius: 6px;
  background-color: var(--background-fill-secondary); background-position: center; background-size: cover;
  background-repeat: no-repeat; border: 1px solid var(--border-color-primary); }
#thumbs { display: none; }
"""

IMAGE_PANE_CSS = """
#image-column { position: sticky !important; top: 12px; align-self: flex-start !important; }
#image-pane .pane-view { position: relative; height: 520px; overflow: hidden; border-radius: 8px;
  background: var(--background-fill-secondary); cursor: grab; touch-action: none; }
#image-pane .pane-view img { position: absolute; left: 0; top: 0; width: 100%; height: 100%; object-fit: contain;
  transform-origin: 0 0; user-select: none; -webkit-user-drag: none; }
#image-pane .pane-empty { position: absolute; inset: 0; display: flex; align-items: center; justify-content: center;
  padding: 1em; text-align: center; color: var(--body-text-color-subdued); }
#image-pane .pane-tools { display: flex; gap: 6px; align-items: center; margin-top: 6px; }
#image-pane .pane-tools button { min-width: 32px; padding: 2px 8px; border-radius: 6px;
  border: 1px solid var(--border-color-primary); background: var(--button-secondary-background-fill); }
#image-pane .pane-zoom { color: var(--body-text-color-subdued); font-size: 0.85em; }
"""


def image_pane_html(title: str, empty: str) -> str:
    return (f'<div class="pane-title"><b>{html.escape(title)}</b></div>'
            '<div class="pane-view"><img alt="" hidden><div class="pane-empty">' + html.escape(empty) + '</div></div>'
            '<div class="pane-tools"><button type="button" data-zoom="out" aria-label="zoom out">−</button>'
            '<button type="button" data-zoom="in" aria-label="zoom in">+</button>'
            '<button type="button" data-zoom="reset" aria-label="fit">⤢</button>'
            '<span class="pane-zoom">100%</span></div>')


# Runs once in the browser (gr.HTML js_on_load; `element` is the pane). A MutationObserver on the page follows the
# chat; its work is deferred to one check per animation frame, so a streaming answer costs one selector per frame.
IMAGE_PANE_JS = r"""
const view = element.querySelector('.pane-view'), img = view.querySelector('img');
const empty = view.querySelector('.pane-empty'), label = element.querySelector('.pane-zoom');
let scale = 1, x = 0, y = 0, drag = null, pending = false;
function apply() {
  if (scale <= 1) { scale = 1; x = 0; y = 0; }
  const w = view.clientWidth, h = view.clientHeight;
  x = Math.min(0, Math.max(w - w * scale, x)); y = Math.min(0, Math.max(h - h * scale, y));
  img.style.transform = `translate(${x}px, ${y}px) scale(${scale})`;
  label.textContent = Math.round(scale * 100) + '%';
  element.dataset.zoom = scale.toFixed(2);
}
function zoom(factor, cx, cy) {
  const next = Math.min(8, Math.max(1, scale * factor));
  x = cx - (cx - x) * next / scale; y = cy - (cy - y) * next / scale; scale = next; apply();
}
function follow() {
  pending = false;
  const shown = document.querySelectorAll('#chatbot .message.user img');
  const src = shown.length ? shown[shown.length - 1].src : '';
  if (src === (img.dataset.src || '')) return;
  img.dataset.src = src; element.dataset.src = src;
  if (src) img.src = src; else img.removeAttribute('src');
  img.hidden = !src; empty.style.display = src ? 'none' : '';
  scale = 1; apply();
}
new MutationObserver(() => { if (!pending) { pending = true; requestAnimationFrame(follow); } })
  .observe(document.body, {subtree: true, childList: true, attributes: true, attributeFilter: ['src']});
follow();
view.addEventListener('wheel', (e) => {
  if (img.hidden) return;
  e.preventDefault(); const r = view.getBoundingClientRect();
  zoom(Math.exp(-e.deltaY / 300), e.clientX - r.left, e.clientY - r.top);
}, {passive: false});
view.addEventListener('pointerdown', (e) => {
  if (scale > 1) { drag = {px: e.clientX, py: e.clientY, x, y}; view.setPointerCapture(e.pointerId); }
});
view.addEventListener('pointermove', (e) => {
  if (drag) { x = drag.x + e.clientX - drag.px; y = drag.y + e.clientY - drag.py; apply(); }
});
view.addEventListener('pointerup', () => { drag = null; });
view.addEventListener('dblclick', () => { scale = 1; apply(); });
element.querySelectorAll('[data-zoom]').forEach((b) => b.addEventListener('click', (e) => {
  e.stopPropagation(); const w = view.clientWidth / 2, h = view.clientHeight / 2, kind = b.dataset.zoom;
  if (kind === 'reset') { scale = 1; apply(); } else zoom(kind === 'in' ? 1.5 : 1 / 1.5, w, h);
}));
"""

_SAFE_ID = re.compile(r"[0-9A-Za-z_-]{1,64}")


def thumbnail_css(thumbnails: dict[str, bytes]) -> str:
    """One `<style>` giving each listed conversation's sidebar row its thumbnail (ids that are not plain tokens are
    skipped: they go into a CSS selector)."""
    rules = []
    for conversation_id, jpeg in thumbnails.items():
        if _SAFE_ID.fullmatch(conversation_id):
            data = base64.b64encode(jpeg).decode("ascii")
            rules.append(f'#conversations label:has(input[value="{conversation_id}"]) > span::before'
                         f'{{background-image:url("data:image/jpeg;base64,{data}")}}')
    return "<style>" + "\n".join(rules) + "</style>"
