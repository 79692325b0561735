"""vars-langgraph-eval: the evaluation and benchmark tooling of vars-langgraph, a distribution of
its own (the runtime never imports it): MultiSessionCollab (`eval collab`: collab, simulator,
runner, plots), PrefEval (`eval prefeval`), LaMP (`eval lamp`), Persona-Plug, the extraction
check and `bench`/`loadtest`. Install with `pip install -e ./eval` from the repository."""
