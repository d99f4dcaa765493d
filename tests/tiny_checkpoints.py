"""Tiny random Hugging Face checkpoints shaped like the real Chinese ones, for tests and the smoke
run of notebook 07_pretrained_checkpoints (which otherwise needs bert-base-chinese and
uer/gpt2-chinese-cluecorpussmall, 400 MB each, from the network).

``make_tiny_checkpoints(directory) -> (bert_dir, gpt2_dir)`` writes two folders laid out exactly
as ``save_pretrained`` lays out the public ones (config.json, model.safetensors, vocab.txt,
tokenizer files):

- the vocabulary is BERT-Chinese style: [PAD]=0, [unused1..99], [UNK]=100, [CLS]=101,
  [SEP]=102, [MASK]=103, then the characters of the hotel *train* split, lowercase Latin and
  digits with their ``##`` pieces, and ASCII punctuation. Like the real vocab.txt it has **no**
  uppercase Latin, full-width Latin, curly quotes, ellipsis or dashes, so the tokenizer gaps of
  lesson 07 show up here too; the tokenizer does not lowercase (``do_lower_case=False``, as
  bert-base-chinese's tokenizer_config.json);
- BERT: ``transformers.BertForPreTraining`` with hidden 32, 2 layers, 2 heads;
- GPT-2: ``transformers.GPT2LMHeadModel`` with the same vocabulary (as UER's Chinese GPT-2),
  n_embd 32, 2 layers, 2 heads, 256 positions.

``make_tiny_electra(bert_dir, folder)`` writes a third folder shaped like the Chinese-ELECTRA
project's small discriminator (hfl/chinese-electra-180g-small-discriminator, which reads the same
BERT vocabulary): ``transformers.ElectraForPreTraining`` with **factorised** embeddings (16 wide,
projected to hidden 32, as the real one's 128 -> 256), 2 layers, 2 heads, the tiny BERT's
vocabulary and tokenizer files.

Weights are random (seeded), and **every** parameter is drawn (:func:`scramble`), LayerNorms
included: with Hugging Face's default init each LayerNorm is weight 1 / bias 0, and a loader that
mixed two LayerNorms up would still give the same outputs. These check plumbing and equivalence,
not accuracy.
For the notebook test, a session fixture can do::

    from tiny_checkpoints import make_tiny_checkpoints, make_tiny_electra, notebook_parameters

    @pytest.fixture(scope="session")
    def tiny_checkpoints(tmp_path_factory):
        return make_tiny_checkpoints(tmp_path_factory.mktemp("checkpoints"))

    # in the notebook test, for 07_pretrained_checkpoints.ipynb:
    bert_dir, gpt2_dir = tiny_checkpoints
    electra_dir = make_tiny_electra(bert_dir, out / "electra-tiny-chinese")
    parameters.update(notebook_parameters(bert_dir, gpt2_dir, electra_dir))
"""

from __future__ import annotations

import shutil
import string
import unicodedata
from collections.abc import Iterable
from pathlib import Path

import torch

BERT_SPECIALS = ["[PAD]", *[f"[unused{i}]" for i in range(1, 100)], "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# Characters the real Chinese BERT vocab.txt lacks; kept out of the tiny one on purpose.
GAP_CHARACTERS = set("“”‘’…—–―") | set(string.ascii_uppercase)
LATIN_PIECES = string.ascii_lowercase + string.digits
ASCII_PUNCTUATION = string.punctuation  # ! " # $ % & ' ( ) * + , - . / : ; < = > ? @ [ \ ] ^ _ ` { | } ~
DONE_MARKER = "TINY_CHECKPOINT_OK_SCRAMBLED"  # a folder of an older, unscrambled version is rebuilt


def scramble(model: torch.nn.Module, seed: int = 0, std: float = 0.3) -> torch.nn.Module:
    """Draw every parameter of ``model`` at random (seeded), LayerNorm gains around 1; tied
    parameters are drawn once. Returns ``model``."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            is_norm_scale = p.ndim == 1 and name.endswith("weight") and (
                "LayerNorm" in name or ".ln_" in name or "ln_f" in name)
            p.copy_(torch.randn(p.shape, generator=g) * std + (1.0 if is_norm_scale else 0.0))
    return model


def _is_kept(ch: str) -> bool:
    if ch in GAP_CHARACTERS or ch.isspace() or unicodedata.category(ch).startswith("C"):
        return False
    # Full-width Latin letters (Ａ-Ｚ, ａ-ｚ) are not in the real vocabulary either.
    return not ("\uff21" <= ch <= "\uff3a" or "\uff41" <= ch <= "\uff5a")


def build_vocab(texts: Iterable[str]) -> list[str]:
    """The tiny vocabulary: BERT's specials at their usual ids, then Latin pieces and characters."""
    chars = sorted({ch for t in texts for ch in t if _is_kept(ch)})
    latin = list(LATIN_PIECES) + [f"##{c}" for c in LATIN_PIECES]
    vocab = list(BERT_SPECIALS)
    for token in latin + list(ASCII_PUNCTUATION) + chars:
        if token not in vocab:
            vocab.append(token)
    return vocab


def _hotel_train_texts() -> list[str]:
    from nblib import data

    return data.split().train["text"].tolist()


def _save_tokenizer(vocab_file: Path, folder: Path) -> None:
    import transformers

    # transformers 5 takes the vocabulary as `vocab` (a `vocab_file=` argument is ignored there).
    tokenizer = transformers.BertTokenizerFast(vocab=str(vocab_file), do_lower_case=False)
    if tokenizer.unk_token_id != 100 or tokenizer.cls_token_id != 101:
        raise RuntimeError(f"tokenizer did not read {vocab_file}: [UNK]={tokenizer.unk_token_id}")
    tokenizer.save_pretrained(folder)


def make_tiny_checkpoints(directory: str | Path, texts: Iterable[str] | None = None,
                          seed: int = 0) -> tuple[Path, Path]:
    """Write (or reuse) ``directory/bert-tiny-chinese`` and ``directory/gpt2-tiny-chinese``.

    ``texts`` default to the hotel train split (the vocabulary's characters). Returns both folders.
    """
    import transformers

    directory = Path(directory)
    bert_dir, gpt2_dir = directory / "bert-tiny-chinese", directory / "gpt2-tiny-chinese"
    if (bert_dir / DONE_MARKER).exists() and (gpt2_dir / DONE_MARKER).exists():
        return bert_dir, gpt2_dir
    vocab = build_vocab(_hotel_train_texts() if texts is None else texts)
    for folder in (bert_dir, gpt2_dir):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")

    torch.manual_seed(seed)
    bert_config = transformers.BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=512, pad_token_id=0)
    scramble(transformers.BertForPreTraining(bert_config), seed).save_pretrained(bert_dir)
    _save_tokenizer(bert_dir / "vocab.txt", bert_dir)

    gpt2_config = transformers.GPT2Config(
        vocab_size=len(vocab), n_positions=256, n_embd=32, n_layer=2, n_head=2,
        bos_token_id=101, eos_token_id=102, pad_token_id=0)  # [CLS] starts, [SEP] ends a text
    scramble(transformers.GPT2LMHeadModel(gpt2_config), seed + 1).save_pretrained(gpt2_dir)
    _save_tokenizer(gpt2_dir / "vocab.txt", gpt2_dir)

    for folder in (bert_dir, gpt2_dir):
        (folder / DONE_MARKER).write_text("complete\n")
    return bert_dir, gpt2_dir


TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def make_tiny_electra(bert_dir: str | Path, folder: str | Path, seed: int = 5) -> Path:
    """Write (or reuse) a tiny random ELECTRA discriminator in ``folder`` with the vocabulary and
    tokenizer of the tiny BERT in ``bert_dir`` (as the real Chinese ELECTRA reads BERT-Chinese's).

    Factorised embeddings (``embedding_size`` 16 < ``hidden_size`` 32), every parameter drawn
    (:func:`scramble`), the replaced-token head included. Returns ``folder``.
    """
    import transformers

    bert_dir, folder = Path(bert_dir), Path(folder)
    if (folder / DONE_MARKER).exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    vocab = (bert_dir / "vocab.txt").read_text(encoding="utf-8").splitlines()
    config = transformers.ElectraConfig(
        vocab_size=len(vocab), embedding_size=16, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=64, max_position_embeddings=512, pad_token_id=0)
    scramble(transformers.ElectraForPreTraining(config), seed).save_pretrained(folder)
    for name in TOKENIZER_FILES:
        if (bert_dir / name).exists():
            shutil.copy(bert_dir / name, folder / name)
    (folder / DONE_MARKER).write_text("complete\n")
    return folder


def notebook_parameters(bert_dir: str | Path, gpt2_dir: str | Path,
                        electra_dir: str | Path | None = None) -> dict[str, str]:
    """The papermill parameters that point lesson 07 at the tiny checkpoints."""
    parameters = {"MODEL_NAME_OR_PATH": str(bert_dir), "GPT2_NAME_OR_PATH": str(gpt2_dir)}
    if electra_dir is not None:
        parameters["ELECTRA_NAME_OR_PATH"] = str(electra_dir)
    return parameters


if __name__ == "__main__":  # python tests/tiny_checkpoints.py /tmp/tiny
    import sys

    bert, gpt2 = make_tiny_checkpoints(sys.argv[1] if len(sys.argv) > 1 else "/tmp/tiny_checkpoints")
    print(bert, gpt2, make_tiny_electra(bert, bert.parent / "electra-tiny-chinese"))
