"""A ReAct agent (`create_react_agent`) with a tool of its own plus VARS memory: the
`pre_model_hook` recalls preferences into the model input, the `post_model_hook` learns from
the answer, and the memory tools search / remember / forget the user's preferences.

Give the user in Studio's context (`user_id`) or as `configurable.user_id`.
"""

import warnings

from langchain_core.tools import tool
from langgraph.prebuilt import create_react_agent

from vars_langgraph import VARSContext
from vars_langgraph.config import config_file
from vars_langgraph.integrations import VARSAgentState
from vars_langgraph.integrations.studio import studio_memory

memory = studio_memory(config_file())


@tool
def word_count(text: str) -> int:
    """Count the words in a text."""
    return len(text.split())


with warnings.catch_warnings():  # deprecated in favour of LangChain's create_agent
    warnings.filterwarnings("ignore", message="create_react_agent has been moved")
    graph = create_react_agent(
        memory.engine.chat_model,
        [word_count, *memory.tools],
        pre_model_hook=memory.pre_model_hook,
        post_model_hook=memory.post_model_hook,
        state_schema=VARSAgentState,
        context_schema=VARSContext,
        name="react_agent",
    )
