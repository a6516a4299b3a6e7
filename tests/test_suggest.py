from model.vocab.words import suggest_words


def test_transposition_counts_as_one_edit() -> None:
    vocab = ["go", "do", "the", "dg", "dog", "god", "dogs"]
    assert "dog" in suggest_words("dgo", vocab)[:3]
    assert suggest_words("dgo", ["dogma", "dog"])[0] == "dog"


def test_ties_break_by_frequency() -> None:
    assert suggest_words("cst", ["cat", "cut"], n=2) == ["cat", "cut"]
    assert suggest_words("cst", ["cut", "cat"], n=2) == ["cut", "cat"]
