"""Rules of the fast path on everyday statements: identity facts, several preferences in one
message, restated complaints; one-off requests and neutral questions give no standing card."""

from __future__ import annotations

import json

import pytest

from vars_langgraph.models.extraction.postprocess import named_task, scope_to_task, task_of
from vars_langgraph.models.extraction.rules import (
    fast_preferences,
    identity_preferences,
    stated_preferences,
)
from vars_langgraph.nodes.extract import combine
from vars_langgraph.types import Preference


def actions(text: str) -> list[str]:
    return [p.action for p in fast_preferences(text)]


def notes(text: str) -> list[str]:
    """The notes the extract node stores for `text` by rules alone."""
    return [p.note for p in combine([("user", text)], [])]


def test_vegetarian_and_format_give_a_diet_card_and_format_cards():
    cards = fast_preferences("I'm vegetarian and I prefer short answers with bullet points.")
    acts = [p.action for p in cards]
    assert any("vegetarian" in a for a in acts)
    assert "keep answers short" in acts and "use bullet points" in acts
    assert all(p.condition in ("general", "answering") for p in cards)  # the user named no task


@pytest.mark.parametrize("text", [
    "Give me an actual recipe, no meat.",
    "I always mix up affect and effect. Which one is the verb?",
    "Can you make this one shorter?",
    "Translate this paragraph into French.",
    "My Mac keeps crashing, what do I do?",
    "I'm on my way home, what's a quick dinner?",
    "Is it wrong to drink coffee on an empty stomach?",
    "If x = 3 and y = 2x, express y as a fraction.",
    "When the list is empty, return None.",
])
def test_no_standing_card(text):
    assert fast_preferences(text) == []


@pytest.mark.parametrize("text,want,cond", [
    ("I'm vegan.", "vegan", "general"),
    ("I keep kosher.", "kosher", "general"),
    ("I'm vegetarian, so keep that in mind for recipe suggestions.", "vegetarian", "suggesting recipes"),
    ("fyi i'm on windows 11", "Windows", "general"),
    ("I use a Mac, so skip the Windows instructions.", "Mac", "general"),
    ("I'm a Windows user.", "Windows", "general"),
    ("I'm a beginner so keep the math simple.", "simple", "general"),
    ("I'm allergic to shellfish.", "shellfish", "general"),
    ("I'm on a tight budget these days.", "affordable", "general"),
    ("I don't drink alcohol.", "alcohol", "general"),
])
def test_identity_facts_imply_a_preference(text, want, cond):
    cards = fast_preferences(text)
    assert any(want in p.action and p.condition == cond for p in cards), [p.note for p in cards]


def test_identity_needs_a_statement_not_a_question_or_a_condition():
    assert identity_preferences("Am I vegetarian if I eat fish?", "Am I vegetarian if I eat fish?") == []
    assert identity_preferences("If I'm on Linux", "If I'm on Linux, does it work?") == []


def test_restated_preferences_in_complaints():
    assert actions("No, I said bullet points.") == ["use bullet points"]
    assert actions("Ugh, tables again. I told you I hate tables.") == ["avoid tables"]
    assert actions("I'm a nurse, you can use medical terms with me.") == ["use medical terms with me"]


def test_an_action_that_names_a_task_is_scoped_to_it():
    """An unscoped card whose action names one task competes only for that task's questions;
    a reason after the action ("..., I'm new to coding") does not scope it."""
    assert notes("Please always show code in Python, not JavaScript.") == [
        "When writing code, show code in Python, not JavaScript."]
    assert task_of("keep it simple for me, I'm new to coding") is None
    assert scope_to_task([Preference(condition="answering", action="format math and code in LaTeX")]) == [
        Preference(condition="answering", action="format math and code in LaTeX")]  # two tasks: as it was
    assert task_of("recommend books under 300 pages") == "recommending books"
    # a question is read whole: its "because ..." is not a reason after an action
    assert named_task("Because my loop never ends, how do I fix this Python code?") == "writing code"


def test_a_scope_inside_the_action_becomes_the_condition():
    """A model (or rule) that copies the user's lead-in into the action ("To be clear, for
    logic puzzles, ...") under a condition that scopes nothing: the user's scope becomes the
    card's condition, so the card competes only for that kind of question."""
    def scoped(condition: str, action: str) -> str:
        return scope_to_task([Preference(condition=condition, action=action)])[0].note

    assert scoped("responding to the user", "To be clear, for logic puzzles, keep it to three "
                  "sentences") == "For logic puzzles, keep it to three sentences."
    assert scoped("general", "What works for me: for medical questions, state the assumptions "
                  "first") == "For medical questions, state the assumptions first."
    assert scoped("answering", "when writing Python, add type hints") == (
        "When writing Python, add type hints.")
    # not scopes: "for example", a "when" that names no task, a scoped card
    assert scoped("answering", "for example, use lists") == "When answering, for example, use lists."
    assert scoped("answering", "when I'm tired, be brief") == "When answering, when I'm tired, be brief."
    assert scoped("writing code", "for tests, use pytest") == "When writing code, for tests, use pytest."


def test_terse_and_trailing_scope_statements():
    assert notes("metric please, always") == ["In general, use metric."]
    assert notes("Bullet points from now on.") == ["In general, use Bullet points."]
    assert actions("metric, pls") == ["use metric"]
    assert actions("Lists are so much easier for me to read than paragraphs.") == [
        "use lists instead of paragraphs"]
    assert actions("If I'm asking for a recipe, list the ingredients first.") == [
        "list the ingredients first"]
    assert actions("List three cities in France.") == []  # an instruction for now, not a standing one


def test_pasted_material_is_not_read_as_the_users_preferences():
    """A problem pasted after a lead-in line ("Help me think through this:") is the task, not
    the user: its "No other masses." is no card; the user's own line after it still is."""
    text = ("Help me think through this:\nA ball rolls down a ramp. No other masses.\n"
            "Choices:\n0. Never mind friction\n1. 2 m/s\nJust so you know, I prefer bullet points.")
    assert actions(text) == ["prefer bullet points"]
    assert actions("No other masses. Find the speed of the ball.") == ["no other masses"]  # said as is
    assert notes("Always explain it, for math problems, step by step.") == [
        "For math problems, explain it, step by step."]  # its own scope


def test_the_language_a_user_codes_in():
    assert notes("I work as a data scientist, mostly in R.") == ["When writing code, write code in R."]
    assert notes("I'm a Kotlin developer.") == ["When writing code, write code in Kotlin."]
    assert notes("I mainly write Swift.") == ["When writing code, write code in Swift."]  # a chat
    assert actions("I live mostly in Rome.") == []
    assert actions("Is it hard to code in Rust?") == []


def test_two_clauses_give_two_cards():
    acts = actions("Please use metric units and keep it under five sentences.")
    assert acts == ["use metric units", "keep it under five sentences"]
    assert len(actions("I'm allergic to nuts and I hate cilantro.")) == 2


def test_node_combination_is_the_rules_plus_what_only_the_model_found():
    window = [("user", "I'm vegan. Jargon makes my eyes glaze over.")]
    same = Preference(condition="general", action="suggest vegan food")
    other = Preference(condition="general", action="avoid jargon")
    assert [p.action for p in combine(window, [same, other])] == [
        "suggest only vegan food, no animal products", "avoid jargon"]
    assert [p.action for p in combine(window, [])] == ["suggest only vegan food, no animal products"]
    # the gate skips the model only: the rules still read an explicit statement
    assert [p.action for p in combine(window, [same, other], gate_pass=False)] == [
        "suggest only vegan food, no animal products"]
    assert combine([("user", "What's a good name for a cat?")], [other], gate_pass=False) == []
    assert combine(window, [same], fast_fallback=False) == [same]
    assert combine(window, [other], union=False) == [other]  # an application's own extractor
    quoted = combine([("user", "I'm not a fan of crowded tourist spots.")], [])
    assert len(quoted) == 1 and "crowded" in quoted[0].action  # the statement, quoted
    # a "no" inside a statement is not feedback; a reply that opens with "No," is
    kept = combine([("user", "I have no interest in European car brands.")], [])
    assert len(kept) == 1 and "European car brands" in kept[0].action
    assert stated_preferences("No, that's not it. I'm not a fan of tofu.") == []


def test_a_model_global_card_must_be_about_how_to_answer():
    """Persona talk ("I'm always looking to improve... take an advanced pottery course?") gave
    "In general, take an advanced pottery course." in every prompt; now it is scoped."""
    window = [("user", "I'm always looking to improve my skills. Should I take an advanced "
                       "pottery course, or focus on marketing?")]
    pottery = Preference(condition="general", action="take an advanced pottery course")
    units = Preference(condition="general", action="use metric units")
    out = combine(window, [pottery, units])
    assert [(p.action, p.is_global) for p in out] == [
        ("take an advanced pottery course", False), ("use metric units", True)]
    assert out[0].note == "When answering, take an advanced pottery course."
    assert combine(window, [pottery], union=False) == [pottery]  # an application's own extractor


def test_wrappers_of_the_built_in_extractors_keep_the_gate_and_the_rules():
    """The background job's `_SkipFast` (and an evaluation's cache) wrap the engine's extractor:
    the node must still gate it and join the rules' cards (`with_rules`)."""
    from vars_langgraph.background import _SkipFast
    from vars_langgraph.models.extraction.llm_backend import LLMExtractor
    from vars_langgraph.models.extraction.transformers_backend import TransformersExtractor
    from vars_langgraph.nodes.extract import builtin, gate_on

    assert LLMExtractor.with_rules and TransformersExtractor.with_rules

    class Own:  # an application's extractor
        def extract(self, turns):
            return []

    class Model(Own):
        with_rules = True

    assert builtin(_SkipFast(Model(), ["x"], None)) and gate_on(None, _SkipFast(Model(), [], None))
    assert not builtin(_SkipFast(Own(), ["x"], None)) and not gate_on(None, Own())
    assert gate_on(True, Own()) and not gate_on(False, Model())


def test_extraction_set_is_large_and_split_into_thirds():
    from benchmarks.extraction import DATA, load_items

    items = load_items(DATA)
    assert len(items) >= 300
    held = [it for it in items if it["split"] == "heldout"]
    assert len(held) == len(items) // 3 + (len(items) % 3 > 2)
    kinds = {it["kind"] for it in items}
    assert {"identity", "multi", "oneoff", "neutral", "negation", "correction", "prefeval", "collab"} <= kinds
    for it in items:  # every label has a condition and an action
        assert all(c["condition"] and c["action"] for c in it["cards"]), json.dumps(it)


def test_a_second_clause_pronoun_becomes_the_answers():
    """"... answers in bullet points, and please keep them short": the second card reads on
    its own ("keep answers short", not "keep them short"); without a referent it stays."""
    from vars_langgraph.models.extraction.rules import fast_preferences

    notes = [p.note for p in fast_preferences(
        "I prefer answers in bullet points, and please keep them short.")]
    assert notes == ["When answering, prefer answers in bullet points.",
                     "When answering, keep answers short."]
    assert [p.action for p in fast_preferences("Keep it short.")] == ["keep it short"]


def test_a_standing_request_asked_as_a_question_is_read_now():
    """Seen in a chat: "Would you mind not recommending horror movies?" gave no card before the
    next answer (the fast path skipped every question); requests about answers or suggestions
    are read, other questions are not."""
    from vars_langgraph.models.extraction.rules import fast_preferences

    def notes(text: str) -> list[str]:
        return [p.note for p in fast_preferences(text)]

    assert notes("Would you mind not recommending horror movies? I scare easily.") == [
        "When answering, avoid recommending horror movies."]
    assert notes("Can you not use jargon?") == ["When answering, do not use jargon."]
    assert notes("Could you always answer in French?") == ["In general, answer in French."]
    assert notes("Could you avoid jargon?") == ["When answering, avoid jargon."]
    for question in ("Can you explain recursion?", "Can you stop the music?",
                     "Will you always be here?", "Could you not tell anyone?"):
        assert notes(question) == [], question


# likes and dislikes of parts of answers said as annoyance, ease, difficulty or an exasperated
# "again with ..."; the same words about other things (or about this answer) are no preference
_SAID_OF_ANSWERS = [
    ("Honestly, long intros drive me crazy.", "avoid long intros"),
    ("Emojis annoy me.", "avoid emojis"),
    ("Jargon gets on my nerves.", "avoid jargon"),
    ("Long code blocks are a pain on my phone.", "avoid long code blocks"),
    ("It bugs me when answers are full of buzzwords.", "avoid buzzwords"),
    ("It annoys me when you use emojis.", "avoid emojis"),
    ("Lists are so much easier for me to read than paragraphs.", "use lists instead of paragraphs"),
    ("Tables are easier to skim.", "prefer tables"),
    ("Walls of text are hard to read.", "avoid walls of text"),
    ("I find it hard to follow when there are no headings.", "use headings"),
    ("Ugh, again with the emojis. Seriously.", "avoid emojis"),
    ("Without the small talk, please. Just answer.", "skip the small talk"),
    ("I'd rather you didn't use analogies.", "do not use analogies"),
    ("My neighbour drives me crazy with his music.", None),
    ("This drives me crazy.", None),
    ("Traffic is a pain today.", None),
    ("It bugs me when you forget things.", None),
    ("The bus is easier than the train.", None),
    ("Without doubt, that was good.", None),
    ("You didn't use bullets.", None),
    ("Again with the rain today.", None),
    # a need about the answer's form, a feeling after a comma, two parts joined by "and"
    ("Honestly I just need the key steps.", "keep it to the key steps"),
    ("I don't need compliments on my code.", "do not give compliments on my code"),
    ("I check these on the bus, walls of text are hard to read.", "avoid walls of text"),
    ("I just need a minute to think.", None),
    ("I don't need help with the rest.", None),
    ("I only want the best for my kids.", None),
    ("I just need the code for the login page.", None),
    ("Sorry, traffic is a pain today.", None),
    # an instruction beside a lasting fact about the user stands; beside the moment's it is a request
    ("I live in Canada, so give prices in CAD please.", "give prices in CAD"),
    ("My daughter is 6, keep stories age-appropriate.", "keep stories age-appropriate"),
    ("English isn't my first language, please use simple words.", "use simple words"),
    ("Go easy on the math, I'm not great with numbers.", "go easy on the math"),
    ("I work nights, so suggest things I can do during the day.",
     "suggest things I can do during the day"),
    ("I'm stuck on this problem, so explain step 3.", None),
    ("Here's my essay, check the grammar.", None),
    ("My code crashes, explain why.", None),
    ("We're going to Rome next week, suggest some restaurants.", None),
    ("I tried that already, show me another way.", None),
    ("I have a meeting at 3, so list the agenda items.", None),
    ("I don't get it, give me an example.", None),
    ("I only have 5 minutes, give me the short version.", None),
    ("My boss wants this by Friday, make it formal.", None),
    # what helps the user, how to speak to them, what they don't drink
    ("I'm a visual learner, diagrams help me a lot.", "use diagrams"),
    ("Worked examples really help.", "use worked examples"),
    ("Write in British English.", "write in British English"),
    ("Talk to me like a friend, not a textbook.", "talk to me like a friend, not a textbook"),
    ("I don't drink alcohol.", "avoid alcohol"),
    ("Thanks, that really helps!", None),
    ("Your example helped me.", None),
    ("Write a poem about the sea.", None),
    ("Write like a pirate for this one.", None),
    # a kind of answer needed, said with a bare plural; not a request for this answer
    ("As a high school teacher, I need explanations I can reuse in class.",
     "give explanations I can reuse in class"),
    ("I need examples with real numbers.", "give examples with real numbers"),
    ("I need details on the second option.", None),
    ("I need recipes for tonight.", None),
    ("I need a summary of this.", None),
]


def test_two_parts_of_an_answer_joined_by_and_give_two_cards():
    assert actions("I'd like bullet points and a short summary at the end.") == [
        "prefer bullet points", "prefer a short summary at the end"]
    assert actions("I prefer stories about dragons and knights.") == [
        "prefer stories about dragons and knights"]
    assert actions("I want the summary first and the details after.") == [
        "prefer the summary first and the details after"]  # an order, one preference


@pytest.mark.parametrize(("text", "action"), _SAID_OF_ANSWERS)
def test_likes_and_dislikes_of_parts_of_answers_are_read_now(text, action):
    assert [p.action for p in fast_preferences(text)] == ([action] if action else [])


@pytest.mark.parametrize("text, action", [
    ("By the way, I'm learning Portuguese, so feel free to add the Portuguese word for each tool.",
     "add the Portuguese word for each tool"),
    ("I'm learning German, so feel free to throw in German words.", "throw in German words"),
    ("Since I'm colourblind, don't rely on red and green.", "don't rely on red and green"),
    ("I teach chemistry, so you can assume I know the periodic table.",
     "assume I know the periodic table"),
])
def test_a_permission_or_a_negation_beside_a_lasting_fact_is_a_standing_preference(text, action):
    """"feel free to ..." and "don't ..." after a fact about the user stand for every answer."""
    assert [p.action for p in combine([("user", text)], [])] == [action]


@pytest.mark.parametrize("text", [
    "My manager wants this today, so feel free to make it formal.",  # the moment's, not lasting
    "I'm stuck, so you can take your time.",
    "Since I'm in a hurry today, don't bother with details.",
    "Feel free to ask me questions.",
])
def test_a_permission_about_the_moment_is_no_standing_preference(text):
    assert not [p for p in combine([("user", text)], []) if p.confidence > 0.5]


def test_more_lasting_facts_and_statements_said_in_passing():
    """Everyday forms the rules missed (each seen in a probe of new messages): a location or a
    diet outside the diet table as the fact beside an instruction, a taste said without "I",
    a fact the user asks to be remembered; praise of this answer gives no card."""
    assert [p.action for p in combine([("user", "We're located in Japan, so give prices in yen.")], [])] \
        == ["give prices in yen"]
    assert [p.action for p in combine([("user", "I'm paleo, so skip grains in meal ideas.")], [])] \
        == ["skip grains in meal ideas"]
    quoted = notes("Not a big fan of emoji-heavy replies.")
    assert len(quoted) == 1 and "Not a big fan of emoji-heavy replies." in quoted[0]
    kept = notes("Don't forget that my partner is allergic to sesame.")
    assert len(kept) == 1 and "my partner is allergic to sesame" in kept[0].lower()
    assert notes("Remember to water the plants.") == []
    assert notes("I really love this explanation!") == []
    # a preference about answers in general is one (collab's users say it so)
    assert notes("I prefer your replies in numbered steps.") == [
        "When answering, prefer your replies in numbered steps."]


def test_the_task_a_lasting_fact_names_scopes_what_follows_from_it():
    """"My boss reads these emails, so ..." scopes the instruction to emails; an instruction
    that names its own task keeps it; a fact that names none leaves it general."""
    assert notes("My boss reads these emails, so keep the tone warm.") == [
        "When writing emails, keep the tone warm."]
    assert notes("My team writes in Java, so keep the math light.") == [
        "When doing math, keep the math light."]
    assert notes("We live in Spain, so give distances in kilometres.") == [
        "In general, give distances in kilometres."]


@pytest.mark.parametrize("text, note", [
    ("I live in Australia so use AUD for prices.", "In general, use AUD for prices."),
    ("I work night shifts, so schedule suggestions should fit around sleeping during the day.",
     "In general, schedule suggestions should fit around sleeping during the day."),
    ("As a wheelchair user, I need step-free routes when you suggest places to visit.",
     "When you suggest places to visit, prefer step-free routes."),
    ("Just give me the code, that's how I like it.", "When writing code, just give me the code."),
    ("Show the command first and the explanation after. That's how I work best.",
     "In general, show the command first and the explanation after."),
    ("In emails, keep it formal.", "In emails, keep it formal."),
    ("With recipes, metric units please.", "For recipes, use metric units."),
    ("I've got ADHD, so break things into small chunks.", "In general, break things into small chunks."),
    ("Can you keep the answers short from now on?", "In general, keep the answers short."),
    ("Keep suggestions within walking distance, I don't have a car.",
     "In general, keep suggestions within walking distance."),
    ("I find it easier when you number the steps.", "When answering, number the steps."),
    ("I'd love it if you added a short summary at the end.",
     "When answering, add a short summary at the end."),
    ("Honestly, I prefer when you ask me a clarifying question first.",
     "When answering, ask me a clarifying question first."),
    ("Keep the tone light, I get anxious easily.", "When answering, keep the tone light."),
    ("I'm a data scientist, so you don't need to explain pandas basics.",
     "In general, do not explain pandas basics."),
    ("Answers in German would be great, I'm practising.", "In general, prefer answers in German."),
    ("I usually cook for two, so scale recipes down.", "When suggesting recipes, scale recipes down."),
    ("I'm on a plant-based diet.", "In general, suggest only vegan food, no animal products."),
    ("I'm trying to cut down on sugar.", "In general, limit sugar."),
    ("For travel stuff, I'm always on a budget.", "In general, suggest affordable, low-cost options."),
])
def test_what_follows_from_a_fact_or_is_said_to_be_how_the_user_likes_it(text, note):
    """Forms a probe of new messages missed: a reason joined by "so" without a comma or said
    last, "X should Y" after a fact, "As a <role>, I need ...", "that's how I like it" and "from
    now on?" as a standing scope, a task named first with "In" / "With"."""
    assert notes(text) == [note]


@pytest.mark.parametrize("text", [
    "just use numpy for it", "Just give me the code.", "I live alone so I should cook less.",
    "My code is slow so it should be rewritten.", "As a teacher, I need help grading these essays.",
    "In 2020, I moved to Paris.", "With that said, use Python.", "Can you keep it short?",
    "I've got a question, so tell me the answer.", "I'm in a hurry, so keep it short.",
    "Note: the file is big.", "I'm 25 minutes late, what do I say?", "I'd love it if you could help.",
])
def test_the_moments_requests_beside_those_forms_give_no_card(text):
    assert notes(text) == []
