"""collab/partner=web: a person answers on a small local web page (Flask, served by werkzeug in a
daemon thread), so a run on a remote machine can be answered from a browser through an SSH tunnel.

Every request needs the random token printed in the URL at start (query `token` or header
X-Cogen-Token): other users of the machine cannot answer. The training thread publishes one
question at a time and waits `timeout` seconds for it; then `fallback=simulated` lets a
SimulatedPartner answer (the stored partner id says so), `fallback=pause` keeps waiting and logs it.
POST /answer checks every field and says in {"error": ...} what is wrong (400; 409 for an answer
to a question no longer pending), so a bad answer never reaches the model.
"""
from __future__ import annotations

import atexit
import base64
import io
import logging
import queue
import secrets
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from flask import Flask, jsonify, render_template_string, request
from rich.console import Console
from rich.text import Text
from werkzeug.serving import WSGIRequestHandler, make_server

from cogen.collab.partner import RATINGS, Partner, SimulatedPartner
from cogen.collab.answers import (PARTS, PartnerStopped, as_whole, check_count, check_drafts, cycle_classes,
                                  edit_keeping, parse_fact)
from cogen.config import CogenError

log = logging.getLogger(__name__)
FALLBACKS = ("pause", "simulated")

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>cogen partner</title><style>
body{font-family:sans-serif;margin:2em} .item{display:inline-block;margin:.5em;text-align:center;vertical-align:top}
img{width:112px;image-rendering:pixelated;border:1px solid #ccc} #error{color:#b00}</style></head><body>
{% macro show(item) %}{% if item.image %}<img src="{{ item.image }}" alt="item">{% else %}<span class="text">{{ item.text }}</span>{% endif %}{% endmacro %}
<h1>cogen</h1>
{% if q is none %}<p id="waiting">No question pending: this page reloads when one comes.</p>{% else %}
<form id="answer" novalidate data-question="{{ q.id }}" data-kind="{{ q.kind }}"><p id="prompt">{{ q.prompt }}</p>
{% if q.kind == "rate" %}{% for item in q.items %}<div class="item">{{ show(item) }}<br><label>{{ loop.index }}:
 <input type="number" min="{{ low }}" max="{{ high }}" name="rating-{{ loop.index0 }}" id="rating-{{ loop.index0 }}"></label></div>{% endfor %}
{% elif q.kind == "compare" %}{% for a, b in q.pairs %}{% set i = loop.index0 %}<fieldset><legend>Pair {{ loop.index }}</legend>
 <label class="item">{{ show(a) }}<br><input type="radio" name="choice-{{ i }}" id="choice-{{ i }}-1" value="1"> 1</label>
 <label class="item">{{ show(b) }}<br><input type="radio" name="choice-{{ i }}" id="choice-{{ i }}-2" value="2"> 2</label></fieldset>{% endfor %}
{% elif q.kind == "ask_condition" %}<input name="classes" id="classes" placeholder="3 or 3,5,7">
{% elif q.kind == "draft" %}{% for item in q.items %}<div class="item">{{ show(item) }}<br>
 <input name="draft-{{ loop.index0 }}" id="draft-{{ loop.index0 }}" placeholder="the start of text {{ loop.index }}"></div>{% endfor %}
{% elif q.kind == "edit" %}{% for item in q.items %}<div class="item">{{ show(item) }}</div>{% endfor %}
 <select name="part" id="part">{% for p in parts %}<option>{{ p }}</option>{% endfor %}</select>
{% else %}<textarea name="facts" id="facts" rows="8" cols="60" placeholder="head | relation | tail"></textarea>{% endif %}
<p><button type="submit" id="submit">Send</button></p></form>{% endif %}
<p id="error"></p><p id="status"></p>
<script>
const token = {{ token|tojson }}, current = {{ (q.id if q else none)|tojson }};
const val = s => { s = (s || "").trim(); return s === "" ? null : /^[+-]?\\d+$/.test(s) ? Number(s) : s; };
function body(form) {
  const kind = form.dataset.kind, q = {id: form.dataset.question}, e = form.elements;
  if (kind === "rate") q.ratings = [...form.querySelectorAll('[name^="rating-"]')].map(x => val(x.value));
  else if (kind === "compare") { q.choices = []; for (let i = 0; e["choice-" + i]; i++) q.choices.push(val(e["choice-" + i].value)); }
  else if (kind === "ask_condition") q.classes = e.classes.value.split(/[\\s,]+/).filter(Boolean).map(val);
  else if (kind === "draft") q.drafts = [...form.querySelectorAll('[name^="draft-"]')].map(x => x.value);
  else if (kind === "edit") q.part = e.part.value;
  else q.facts = e.facts.value.split("\\n");
  return q;
}
const form = document.getElementById("answer");
if (form) form.addEventListener("submit", async ev => {
  ev.preventDefault();
  const r = await fetch("answer", {method: "POST", body: JSON.stringify(body(form)),
                                   headers: {"Content-Type": "application/json", "X-Cogen-Token": token}});
  const reply = await r.json().catch(() => ({error: r.statusText}));
  document.getElementById("error").textContent = r.ok ? "" : reply.error;
  if (r.ok) { form.remove(); document.getElementById("status").textContent = "Thanks: answer sent."; }
});
setInterval(async () => {   // a new question (or a withdrawn one) reloads the page
  const r = await fetch("question", {headers: {"X-Cogen-Token": token}});
  if (r.ok && (await r.json()).id !== current && !document.getElementById("status").textContent) location.reload();
}, 1500);
</script></body></html>"""


@dataclass
class Question:
    id: str
    kind: str
    prompt: str
    check: Callable[[dict], Any]   # the posted JSON -> the answer, or ValueError saying what is wrong
    items: list = field(default_factory=list)   # {"image": data URL} or {"text": str}
    pairs: list = field(default_factory=list)


def _shown(items) -> list[dict]:
    if not isinstance(items, torch.Tensor):
        return [{"text": str(t)} for t in items]
    from matplotlib.image import imsave

    from cogen.callbacks.image_grid import image_grid

    shown = []
    for image in items:
        grid, buf = image_grid(image[None], 1, pad=0), io.BytesIO()
        imsave(buf, grid, format="png", cmap="gray" if grid.ndim == 2 else None, vmin=0.0, vmax=1.0)
        shown.append({"image": "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")})
    return shown


def _list(data: dict, key: str) -> list:
    if not isinstance(data.get(key), list):
        raise ValueError(f"'{key}' must be a list")
    return data[key]


def _numbers(values: list, what: str, low: int, high: int) -> list[int]:
    out = []
    for i, v in enumerate(values, 1):
        try:
            out.append(as_whole(v, what, low, high))
        except ValueError as e:
            raise ValueError(f"item {i}: {e}") from None
    return out


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args, **kwargs) -> None:   # one line per poll would flood the training log
        pass


class WebPartner(Partner):
    """name: who answers (the stored partner id). host, port: where to serve (port 0: a free one).
    timeout: seconds to wait for each answer (None: forever). fallback: pause | simulated.
    fallback_partner: SimulatedPartner arguments (seed, noise, oracle, ...) for fallback=simulated."""

    kind = "web"

    def __init__(self, name: str = "human", host: str = "127.0.0.1", port: int = 0, timeout: float | None = 600.0,
                 fallback: str = "pause", fallback_partner: dict | None = None, console: Console | None = None):
        if fallback not in FALLBACKS:
            raise CogenError(f"collab.partner.fallback={fallback!r}: use one of {', '.join(FALLBACKS)}.")
        if timeout is not None and timeout <= 0:
            raise CogenError(f"collab.partner.timeout={timeout}: seconds, more than 0 (null: wait forever).")
        self.name, self.timeout, self.fallback = name, timeout, fallback
        self.simulated = SimulatedPartner(**dict(fallback_partner or {})) if fallback == "simulated" else None
        self.token, self.asked, self.by_fallback = secrets.token_urlsafe(24), 0, False
        self._lock, self._answers, self._pending = threading.Lock(), queue.Queue(), None
        try:
            self._server = make_server(host, port, self._app(), threaded=True, request_handler=_QuietHandler)
        except OSError as e:
            raise CogenError(f"collab.partner: cannot serve on {host}:{port} ({e.strerror}); choose another "
                             "collab.partner.port, or 0 for a free one.") from None
        self.port = self._server.server_port
        self.url = f"http://{f'[{host}]' if ':' in host else host}:{self.port}/?token={self.token}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="cogen-web-partner", daemon=True)
        self._thread.start()
        atexit.register(self.close)
        (console or Console()).print(Text(f"cogen: answer the partner's questions at {self.url}", style="bold"),
                                     soft_wrap=True)
        log.info("web partner serving at %s", self.url)

    @property
    def id(self) -> str:
        return f"{self.name} (no answer in {self.timeout:g} s: {self.simulated.id})" if self.by_fallback else self.name

    def _app(self) -> Flask:
        app = Flask(__name__)

        @app.before_request
        def guard():
            given = request.args.get("token") or request.headers.get("X-Cogen-Token") or ""
            if not secrets.compare_digest(given.encode(), self.token.encode()):
                return jsonify(error="missing or wrong token: open the URL cogen printed (it ends in ?token=...)"), 403

        @app.get("/")
        def page():
            low, high = RATINGS
            return render_template_string(PAGE, q=self._pending, token=self.token, parts=PARTS, low=low, high=high)

        @app.get("/question")
        def question():
            q = self._pending
            return jsonify(id=q.id if q else None, kind=q.kind if q else None, prompt=q.prompt if q else None)

        @app.post("/answer")
        def answer():
            data = request.get_json(silent=True)
            if not isinstance(data, dict):
                return jsonify(error="the body must be a JSON object"), 400
            if "id" not in data:
                return jsonify(error="'id' is missing: say which question this answers"), 400
            with self._lock:
                q = self._pending
                if q is None or data["id"] != q.id:
                    return jsonify(error=f"question {data['id']!r} is not the pending one: reload the page"), 409
                try:
                    value = q.check(data)
                except ValueError as e:
                    return jsonify(error=str(e)), 400
                self._pending = None
                self._answers.put(value)
            return jsonify(ok=True)

        return app

    def _ask(self, kind: str, prompt: str, check: Callable[[dict], Any], fallback: Callable[[SimulatedPartner], Any],
             items=(), pairs=()) -> Any:
        """Publish the question and wait for its answer (or the fallback's, after `timeout`)."""
        with self._lock:
            self.asked += 1
            self._pending = Question(f"{self.asked}-{secrets.token_hex(4)}", kind, prompt, check, list(items), list(pairs))
        waited = 0.0
        while True:
            try:
                value = self._answers.get(timeout=self.timeout)
                self.by_fallback = False
                return value
            except queue.Empty:
                with self._lock:
                    if not self._answers.empty():   # answered at the last moment
                        continue
                    if self.simulated is not None:
                        self._pending = None
                if self.simulated is not None:
                    self.by_fallback = True
                    return fallback(self.simulated)
                waited += self.timeout
                log.warning("no answer to the %s question after %.0f s: still waiting at %s", kind, waited, self.url)
            except KeyboardInterrupt:
                self._pending = None
                raise PartnerStopped("stopped while waiting for the web partner; every answer given so far is saved "
                                     "in the feedback store: run the same command with resume=auto to go on.") from None

    def ask_condition(self, num_classes: int, n: int) -> torch.Tensor:
        def check(data: dict) -> torch.Tensor:
            return cycle_classes(_numbers(_list(data, "classes"), "a class", 0, num_classes - 1), n)

        return self._ask("ask_condition", f"Which class to generate next (0-{num_classes - 1})? Several, e.g. 3,5,7, "
                         f"are taken in turn for the {n} samples.", check, lambda s: s.ask_condition(num_classes, n))

    def rate(self, items) -> torch.Tensor:
        low, high = RATINGS

        def check(data: dict) -> torch.Tensor:
            ratings = _list(data, "ratings")
            check_count(ratings, len(items), "ratings", "[5, 3, 4]")
            return torch.tensor(_numbers(ratings, "a rating", low, high), dtype=torch.int64)

        return self._ask("rate", f"Rate each item, {low} worst to {high} best.", check, lambda s: s.rate(items),
                         items=_shown(items))

    def compare(self, first, second) -> torch.Tensor:
        n = len(first)

        def check(data: dict) -> torch.Tensor:
            choices = _list(data, "choices")
            check_count(choices, n, "choices", "[1, 2, 1]")
            return torch.tensor(_numbers(choices, "a choice", 1, 2), dtype=torch.int64) - 1

        return self._ask("compare", "For each pair, choose the better one.", check, lambda s: s.compare(first, second),
                         pairs=zip(_shown(first[:n]), _shown(second[:n])))

    def edit(self, items):
        if not isinstance(items, torch.Tensor):
            return self._ask("draft", "Write the start of each text (empty: the model writes it all).",
                             lambda data: check_drafts(_list(data, "drafts"), len(items)), lambda s: s.edit(items),
                             items=_shown(items))

        def check(data: dict):
            if not isinstance(data.get("part"), str):
                raise ValueError(f"'part' must be one of {', '.join(PARTS)}")
            return edit_keeping(items, data["part"])

        return self._ask("edit", "Which part of every image to keep?", check, lambda s: s.edit(items),
                         items=_shown(items))

    def supply_facts(self, query: str) -> list[tuple[str, str, str]]:
        def check(data: dict) -> list[tuple[str, str, str]]:
            lines = _list(data, "facts")
            if not all(isinstance(line, str) for line in lines):
                raise ValueError("'facts' must be a list of lines: head | relation | tail")
            return [parse_fact(line) for line in lines if line.strip()]

        return self._ask("supply_facts", f"Facts the model should respect about {query!r}: one per line, "
                         "head | relation | tail.", check, lambda s: s.supply_facts(query))

    def close(self) -> None:
        """Stop serving (also run at interpreter exit)."""
        server, self._server = getattr(self, "_server", None), None
        if server is None:
            return
        atexit.unregister(self.close)
        server.shutdown()
        server.server_close()
        self._thread.join(timeout=5)
