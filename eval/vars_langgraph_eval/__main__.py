"""`python -m vars_langgraph_eval [options]`: the same as `vars-langgraph eval collab`."""

import sys

from vars_langgraph_eval.runner import collab_main

sys.exit(collab_main(sys.argv[1:]))
