"""What users say about themselves, read by both extraction and the reward: kept apart so that
neither imports the other (`models/extraction` already reads the reward's cues)."""

from __future__ import annotations

import re

# a lasting fact about the user that an instruction follows from ("I live in Canada", "my
# daughter is 6", "I'm not great with numbers"), not the moment's ("I'm stuck", "my code crashes")
LASTING_FACT = re.compile(
    r"\b(?:i|we)\s+(?:live|work|teach|study|use|usually|always|"
    r"have\s+(?:a|an|two|three|\d+)\s+(?:kids?|children|daughters?|sons?|toddlers?|dogs?|cats?)|"
    r"(?:have\s+)?(?:got\s+)?(?:adhd|autism|dyslexia|diabetes|arthritis|anxiety|tinnitus|"
    r"a\s+(?:bad|weak|dodgy)\s+(?:knee|back|hip|shoulder))|"
    r"(?:don't|do not)\s+(?:have|own)\s+an?\s+(?:car|oven|microwave|dishwasher|tv|printer|smartphone)|"
    r"(?:don't|do not|can't|cannot)\s+drive)\b|"
    r"\b(?:i|we)(?:'ve|\s+have)\s+got\s+(?:adhd|autism|dyslexia|diabetes|arthritis|anxiety|tinnitus|"
    r"a\s+(?:bad|weak|dodgy)\s+(?:knee|back|hip|shoulder))\b|"
    r"\bi(?:'m| am)\s+in\s+(?-i:[A-Z])[a-z]+\b|"  # "I'm in Ireland" (a place, not "in a hurry")
    r"\b(?:i'm|im|i am|we're|we are)\s+(?:a|an|training|learning|studying|practi[sc]ing|allergic|"
    r"colou?r\s?blind|deaf|blind|dyslexic|diabetic|pregnant|new to|based|located|from|"
    r"not (?:very |really |that )?(?:great|good|a fan|techy|tech-savvy|technical|confident|handy)|"
    r"\d{2}(?:\s+years old)?(?!\s*(?:min|%|percent|hours?|days?|minutes))|"
    r"keto|paleo|muslim|jewish|hindu|sober)\b|"  # the diets of `_DIETS` give their own card
    r"\b(?:my|our)\s+(?:kids?|children|daughter|son|boss|team|readers|students|audience|clients|"
    r"wife|husband|partner|family)\b|\bisn't my first language\b", re.I)
