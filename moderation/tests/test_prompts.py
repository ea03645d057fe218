"""Prompt moderation, pure (no database): normalisation, term lists, the learned classifier, and the
corpus of evasions and innocent near-misses (recall and false-positive rate printed and asserted)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from moderation import normalize, terms, text

pytestmark = pytest.mark.profile("embedded")
CORPUS = json.loads((Path(__file__).parent / "data" / "prompt_corpus.json").read_text("utf-8"))


@pytest.fixture(scope="module")
def classifier():
    c = text.shared_classifier()
    c.warm()
    return c


def test_the_corpus_is_large_enough_and_recall_and_false_positives_meet_the_goal(classifier):
    evasions, innocent = CORPUS["evasions"], CORPUS["innocent"]
    assert len(evasions) >= 150 and len(innocent) >= 150
    missed = [e["text"] for e in evasions if text.check_prompt(e["text"], classifier=classifier) is None]
    flagged = [t for t in innocent if text.check_prompt(t, classifier=classifier) is not None]
    recall = 1 - len(missed) / len(evasions)
    fpr = len(flagged) / len(innocent)
    print(f"prompt corpus: recall {recall:.3f} on {len(evasions)} evasions, "
          f"false positives {fpr:.3f} on {len(innocent)} near-misses")
    assert recall >= 0.95, missed
    assert fpr <= 0.02, flagged
    # Every evasion technique of the corpus is represented (not a corpus of one trick).
    assert len({e["transform"] for e in evasions}) >= 12


@pytest.mark.parametrize("prompt", [
    "p.o.r.n", "p o r n", "p-o-r-n", "pоrn",  # Cyrillic о
    "ｐｏｒｎ", "p\u200bo\u200brn", "P0RN", "pooorn", "p\u0301o\u0301r\u0301n\u0301", "𝐩𝐨𝐫𝐧",
    "nаκеd",  # Cyrillic а, Greek kappa, Cyrillic е
    "b_l_o_w_j_o_b", "$exy", "n4k3d",
])
def test_evasions_normalise_to_the_listed_word(prompt):
    hit = terms.platform_terms().match(prompt)
    assert hit is not None and hit.category == "sexual", prompt


@pytest.mark.parametrize("prompt", [
    "Scunthorpe United", "a cocktail party", "a therapist's office", "Assassin's Creed", "a sextant",
    "the Essex coast", "grape harvest", "the naked eye", "a class of 1999", "shuttlecock", "analysis",
])
def test_innocent_words_that_contain_listed_ones_survive(prompt):
    assert terms.platform_terms().match(prompt) is None


def test_organisation_terms_add_to_the_platform_list_word_by_word():
    listed = terms.platform_terms().extended(["volcano*", "red dragon"])
    assert listed.match("a V0LCANIC eruption") is None  # volcano* is a prefix of "volcanoes", not "volcanic"
    assert listed.match("two volcanoes").category == terms.ORG_CATEGORY
    assert listed.match("a r.e.d dragon").category == terms.ORG_CATEGORY
    assert listed.match("a red fox and a dragon") is None
    assert listed.match("porn").category == "sexual"  # the platform's terms are still there


def test_the_classifier_catches_abuse_the_lists_do_not_name(classifier):
    verdict = text.check_prompt("shut up you stupid bitch", classifier=classifier)
    assert verdict is not None and verdict.detector == "classifier" and verdict.score >= 0.99
    assert text.check_prompt("a weather cock on a barn", classifier=classifier) is None


def test_a_model_file_that_is_not_the_pinned_one_is_refused(tmp_path):
    import shutil
    from importlib import resources

    folder = Path(str(resources.files("profanity_check").joinpath("data")))
    for name in ("model.joblib", "vectorizer.joblib"):
        shutil.copy(folder / name, tmp_path / name)
    with (tmp_path / "model.joblib").open("ab") as fh:
        fh.write(b"tampered")
    with pytest.raises(text.ModelFileError, match="sha256"):
        text.PromptClassifier(tmp_path).warm()
    with pytest.raises(text.ModelFileError, match="missing"):
        text.PromptClassifier(tmp_path / "nowhere").warm()


def test_normalisation_keeps_numbers_and_reads_leet_only_inside_words():
    assert normalize.tokens("1984 in 3D, l33t!") == ["1984", "in", "3d", "leet"]
    assert ["porn"] in normalize.forms("p . o . r . n")
