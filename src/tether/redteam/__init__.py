"""Red-teaming: attacks (jailbreak templates, converters, search), targets, scoring, adversarial data."""
