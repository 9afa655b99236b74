"""The chat page ``nest serve`` shows at ``/``: one self-contained HTML document, no external assets.

It keeps the conversation in the browser, streams each answer from ``/v1/chat/completions`` (``nest.html``
asked for), shows the text as it arrives, then replaces it with the server's rendering of the result — the
HTML view's look (:mod:`nest_integrations.html`): copied spans highlighted and numbered, each source shown in
context and linked to ``/v1/sources/<doc>`` with the span highlighted (fetched with the API key when one is
set), unsupported sentences marked. An API key
typed in the key box is kept in ``localStorage`` and sent as ``Authorization: Bearer``. ``/?q=QUESTION`` asks
QUESTION when the page opens; ``#key=KEY`` in the address sets the key (a fragment never reaches the server).
"""

from __future__ import annotations

from nest_integrations.html import _CSS

__all__ = ["PAGE_HTML"]

_JS = r"""
const $ = (s) => document.querySelector(s);
const log = $('#log'), form = $('#ask'), box = $('#q'), keyBox = $('#key'), stopBtn = $('#stop');
const hashKey = new URLSearchParams(location.hash.slice(1)).get('key');  // #key=... (never sent to the server)
if (hashKey) { localStorage.setItem('nest-api-key', hashKey); history.replaceState(null, '', location.pathname + location.search); }
keyBox.value = localStorage.getItem('nest-api-key') || '';
keyBox.addEventListener('change', () => localStorage.setItem('nest-api-key', keyBox.value));
let turns = [], controller = null;
function bubble(role, text) {
  const d = document.createElement('div'); d.className = 'turn ' + role;
  const b = document.createElement('div'); b.className = 'body'; b.textContent = text;
  d.appendChild(b); log.appendChild(d); d.scrollIntoView({block: 'end'}); return b;
}
function linkSources(el) {
  el.querySelectorAll('mark.span').forEach((m) => {
    const url = '/v1/sources/' + encodeURIComponent(m.dataset.docId) + '?start=' + m.dataset.start + '&end=' + m.dataset.end;
    m.dataset.href = url;
  });
  el.querySelectorAll('ol.sources li').forEach((li, i) => {
    const m = el.querySelector('#span-' + (i + 1));
    if (!m || m.dataset.docId.startsWith('message-')) return;
    const a = document.createElement('a'); a.className = 'open-source'; a.href = m.dataset.href;
    a.target = '_blank'; a.rel = 'noopener'; a.textContent = 'open source';
    a.addEventListener('click', async (e) => {  // with an API key a plain link would get 401: fetch it with the key
      if (!keyBox.value) return;
      e.preventDefault(); const w = window.open('', '_blank');
      const r = await fetch(a.href, {headers: {'Authorization': 'Bearer ' + keyBox.value}});
      w.document.write(await r.text()); w.document.close();
    });
    li.querySelector('.where').append(' · ', a);
  });
}
async function ask(question) {
  turns.push({role: 'user', content: question});
  bubble('user', question);
  const out = bubble('assistant', ''); out.classList.add('streaming');
  controller = new AbortController(); stopBtn.disabled = false;
  const headers = {'Content-Type': 'application/json'};
  if (keyBox.value) headers['Authorization'] = 'Bearer ' + keyBox.value;
  let text = '', final = null;
  try {
    const r = await fetch('/v1/chat/completions', {method: 'POST', headers, signal: controller.signal,
      body: JSON.stringify({messages: turns, stream: true, nest: {html: true}})});
    if (!r.ok) { const e = await r.json(); throw new Error(e.error ? e.error.message : r.statusText); }
    const reader = r.body.getReader(), dec = new TextDecoder(); let buf = '';
    for (;;) {
      const {value, done} = await reader.read(); if (done) break;
      buf += dec.decode(value, {stream: true});
      let i;
      while ((i = buf.indexOf('\n\n')) >= 0 || (i = buf.indexOf('\r\n\r\n')) >= 0) {
        const ev = buf.slice(0, i); buf = buf.slice(i + (buf.startsWith('\r\n', i) ? 4 : 2));
        for (const line of ev.split(/\r?\n/)) {
          if (!line.startsWith('data:')) continue;
          const data = line.slice(5).trim(); if (data === '[DONE]') continue;
          const msg = JSON.parse(data);
          if (msg.error) throw new Error(msg.error.message);
          const c = msg.choices && msg.choices[0];
          if (c && c.delta && c.delta.content) { text += c.delta.content; out.textContent = text; }
          if (c && c.finish_reason) final = msg.nest;
        }
      }
    }
  } catch (e) {
    out.classList.add('error'); out.textContent = text + (text ? '\n' : '') + '[' + e.message + ']';
  } finally { controller = null; stopBtn.disabled = true; out.classList.remove('streaming'); }
  if (final && final.html) { out.innerHTML = final.html; linkSources(out); out.classList.add('done'); }
  turns.push({role: 'assistant', content: text});
  document.body.dataset.answers = String(turns.length / 2);
}
form.addEventListener('submit', (e) => {
  e.preventDefault(); const q = box.value.trim(); if (!q || controller) return; box.value = ''; ask(q);
});
box.addEventListener('keydown', (e) => { if (e.key === 'Enter' && !e.shiftKey) { e.preventDefault(); form.requestSubmit(); } });
stopBtn.addEventListener('click', () => controller && controller.abort());
const first = new URLSearchParams(location.search).get('q');  // /?q=... asks on load (shareable links)
if (first) ask(first);
$('#reset').addEventListener('click', () => { turns = []; log.innerHTML = ''; });
"""

_PAGE_CSS = """
body{font:16px/1.55 system-ui,-apple-system,Segoe UI,sans-serif;margin:0;color:#1d1d1f;background:#fafafa}
header{padding:.8rem 1.2rem;border-bottom:1px solid #ddd;background:#fff;display:flex;gap:1rem;align-items:center}
header h1{font-size:1.1rem;margin:0;flex:1} header input{width:14rem}
main{max-width:52rem;margin:0 auto;padding:1rem 1.2rem 9rem}
.turn{margin:1rem 0}.turn.user .body{background:#e9eef6;border-radius:.6rem;padding:.5rem .8rem;display:inline-block}
.turn.assistant .body{background:#fff;border:1px solid #e3e3e3;border-radius:.6rem;padding:.6rem .9rem;white-space:pre-wrap}
.turn.assistant .body.done{white-space:normal}.body.streaming::after{content:'▍';color:#2b7bd6}
.body.error{border-color:#d0312d;color:#8a1f1a}
form{position:fixed;bottom:0;left:0;right:0;background:#fff;border-top:1px solid #ddd;padding:.8rem}
form .row{max-width:52rem;margin:0 auto;display:flex;gap:.5rem}
textarea{flex:1;font:inherit;padding:.5rem;border:1px solid #bbb;border-radius:.4rem;resize:vertical;min-height:2.6rem}
button{font:inherit;padding:.4rem .9rem;border-radius:.4rem;border:1px solid #2b7bd6;background:#2b7bd6;color:#fff}
button.secondary{background:#fff;color:#2b7bd6} button:disabled{opacity:.4}
a.open-source{font-size:.85em}
"""

PAGE_HTML = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>NEST chat</title><style>{_PAGE_CSS}{_CSS}</style></head>
<body>
<header><h1>NEST — answers with exact citations</h1>
<label>API key <input id="key" type="password" autocomplete="off" placeholder="(none)"></label>
<button id="reset" class="secondary" type="button">New chat</button></header>
<main id="log" aria-live="polite"></main>
<form id="ask"><div class="row">
<textarea id="q" placeholder="Ask a question about the corpus…" aria-label="question"></textarea>
<button id="send" type="submit">Send</button><button id="stop" class="secondary" type="button" disabled>Stop</button>
</div></form>
<script>{_JS}</script>
</body></html>
"""
