"""Word utilities."""


def reverse_words(text):
    """The words of text in reverse order, single-spaced."""
    return " ".join(text.split())


def count_words(text):
    """How many words text has."""
    return len(text.split())
