"""Evaluation and benchmark tooling, apart from the runtime (which never imports it):
MultiSessionCollab (`eval collab`: collab, simulator, runner, plots), PrefEval (`eval prefeval`),
LaMP (`eval lamp`), Persona-Plug, the extraction check and `bench`/`loadtest`.
Install with `pip install "vars-langgraph[eval]"`."""
