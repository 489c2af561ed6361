"""Small word-level tokenizers for the built-in tiny model, with a Llama-3 style chat template.

Built with the `tokenizers` library and wrapped as a transformers fast tokenizer, so they save,
load and apply chat templates exactly like the published models' tokenizers.
"""

from __future__ import annotations

from collections.abc import Iterable

MASK = "<|mdm_mask|>"
EOS = "<|endoftext|>"
EOT = "<|eot_id|>"
PAD = "<|pad|>"
UNK = "<|unk|>"
BOS = "<|begin_of_text|>"
HEADER_START = "<|start_header_id|>"
HEADER_END = "<|end_header_id|>"
SPECIAL_TOKENS = [PAD, UNK, EOS, EOT, MASK, BOS, HEADER_START, HEADER_END]
ROLES = ["system", "user", "assistant"]

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
    "{{ message['content'] }}<|eot_id|>"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
"""LLaDA's chat layout (headers, then content, then end-of-turn) without its BOS token."""

# Pieces split off as their own tokens even when written without spaces, e.g. "\boxed{12}".
SPLIT_PATTERN = r"\\boxed\{|<[/a-z_]+>|\d+|[A-Za-z]+|[^\sA-Za-z\d]"


def build_word_tokenizer(words: Iterable[str]):
    """A fast word-level tokenizer: special tokens, chat roles, then `words` in order.

    Text splits into `\\boxed{`, tags like `<answer>`, numbers, words and single symbols;
    decoding joins tokens with spaces, so encode(decode(ids)) == ids for in-vocabulary text.
    """
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab: dict[str, int] = {}
    for token in [*SPECIAL_TOKENS, *ROLES, *words]:
        vocab.setdefault(token, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex(SPLIT_PATTERN), "isolated")]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token=UNK,
        pad_token=PAD,
        eos_token=EOS,
        mask_token=MASK,
        bos_token=BOS,
        additional_special_tokens=[EOT, HEADER_START, HEADER_END],
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast
