"""nblib.tasks.zero_shot: the prompt-and-label-words scorer, with the course's tokenizer (lesson 04) and a
Hugging Face one (lesson 07's UER GPT-2, here a tiny random checkpoint)."""

import pytest
import torch
from tiny_checkpoints import make_tiny_checkpoints

from nblib.data.text import CharTokenizer
from nblib.hub import checkpoints
from nblib.models.gpt import GPT, GPTConfig
from nblib.tasks import zero_shot

PROMPT = "总之很"


@pytest.fixture(scope="module")
def course_lm():
    """A tiny random GPT over a character vocabulary, 16 positions: a row longer than that raises."""
    tokenizer = CharTokenizer.build(["房间很干净，服务也好。早餐差！总之一般"], min_count=1)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, n_positions=16, n_embd=32, n_layer=2, n_head=2))
    return model.eval(), tokenizer


def _scores(course_lm, texts, **kw):
    model, tokenizer = course_lm
    return zero_shot.zero_shot_scores(model, tokenizer, texts, PROMPT, ["好"], ["差"], max_length=16, **kw)


def test_label_score_is_a_log_probability_ratio():
    logits = torch.log(torch.tensor([[0.5, 0.2, 0.2, 0.1]]))
    torch.testing.assert_close(zero_shot.label_score(logits, [0], [1, 3]), torch.log(torch.tensor([0.5 / 0.3])))
    torch.testing.assert_close(zero_shot.label_score(torch.tensor([[0.0, 1.0, 2.0]]), [2], [0, 1]),
                               torch.tensor([2.0 - torch.logsumexp(torch.tensor([0.0, 1.0]), 0).item()]))


def test_course_tokenizer_scores_equal_a_forward_pass_by_hand(course_lm):
    model, tokenizer = course_lm
    review = "房间很干净"
    ids = [tokenizer.cls_id, *tokenizer.encode(review + PROMPT, add_special=False)]
    with torch.no_grad():
        log_probs = model(torch.tensor([ids]))[0, -1].log_softmax(-1)
    by_hand = log_probs[tokenizer.token_to_id["好"]] - log_probs[tokenizer.token_to_id["差"]]
    torch.testing.assert_close(_scores(course_lm, [review]), by_hand.reshape(1))
    # in a right-padded batch beside a longer and a shorter review, the score stays
    batch = _scores(course_lm, ["服务也好，早餐差", review, "差"])
    torch.testing.assert_close(batch[1:2], by_hand.reshape(1), atol=1e-5, rtol=1e-5)


def test_end_sentence_closes_open_reviews_and_keeps_room(course_lm):
    # "好" gets the 。 that "好。" already has: the same row, the same score; without the option they differ
    closed = _scores(course_lm, ["好", "好。", "好！", ""], end_sentence="。")
    assert closed[0] == closed[1]
    plain = _scores(course_lm, ["好", "好。"])
    assert plain[0] != plain[1]
    assert plain[1] == closed[1], "a review that ends a sentence is left as it is"
    # too long for 16 positions: cut to 16 - [CLS] - prompt (3) - room for 。 (1) = 11 characters
    long = _scores(course_lm, ["房" * 40, "房" * 11], end_sentence="。")
    assert long[0] == long[1]
    with pytest.raises(ValueError, match="no room"):
        zero_shot.zero_shot_scores(course_lm[0], course_lm[1], ["好"], "很" * 15, ["好"], ["差"], max_length=16)
    with pytest.raises(ValueError, match="not single tokens"):
        _scores(course_lm, ["好"], end_sentence="?")


def test_hugging_face_tokenizer_scores_do_not_depend_on_padding(tmp_path):
    _, gpt_dir = make_tiny_checkpoints(tmp_path, texts=["房间很干净,服务也好,下次还来", "差", "一般", "。总之很好"])
    tokenizer, gpt = checkpoints.load_gpt2(gpt_dir)
    texts = ["房间很干净,服务也好,下次还来", "差", "一般"]
    args = (gpt, tokenizer)
    together = zero_shot.zero_shot_scores(*args, texts, "。总之很", ["好"], ["差"], max_length=16)
    alone = torch.cat([zero_shot.zero_shot_scores(*args, [t], "。总之很", ["好"], ["差"], max_length=16)
                       for t in texts])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="not single tokens"):
        zero_shot.zero_shot_scores(*args, texts, "很", ["好极了"], ["差"])
