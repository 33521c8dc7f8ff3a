"""``thinktank view``: a local web app over the ledger, to read what the models wrote.

Server-rendered HTML (no build step, no script needed to read a page) and a JSON
API over the same data, with the server's auth model: bound to 127.0.0.1 by
default, and with ``--api-key`` every route asks for the key.

Pages (each has a JSON twin under ``/api``):

- ``/``: runs, newest first, filtered by ``command``, ``strategy``, ``model``,
  ``client``, ``since``/``until`` (YYYY-MM-DD) and paged with ``page``;
- ``/runs/{run_id}``: a run's summary: a bench run's report tables and plots, a
  solve's or a server request's transcript;
- ``/runs/{run_id}/problems/{problem_id}``: one problem: the question, the
  evaluator's reference shown apart, every strategy's candidates (text, answer,
  votes, scores, cost), its search tree and transcript where it has them;
- ``/runs/{run_id}/compare?a=CONFIG&b=CONFIG``: two configurations (``strategy @
  model`` labels) on the same problems, where one is right and the other wrong;
- ``/runs/{run_id}/live``: a run in progress, refreshed as results come;
- ``/calls``: the latest calls with their prompts and completions, paged back
  with ``before`` (a call id).

``/login?key=KEY`` (no twin) gives a browser the session cookie that stands for
the key. The modules: ``app`` (routes, auth, errors), ``data`` (what each page
shows, read from the ledger), ``pages`` (its HTML), ``plots`` (the bench report's
plots as SVG), ``trees`` and ``transcripts`` (search trees, collaborations).
"""
