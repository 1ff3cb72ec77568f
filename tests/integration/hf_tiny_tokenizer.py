"""The Hub-style tokenizer the export checks (check_export.py, check_gguf.py) build their base models with: a
byte-level BPE of 300 tokens trained on a few sentences, <s> prepended as Llama's post-processor does, and a small
chat template. Made by HF `tokenizers` + transformers, never by ranktune."""
CHAT = "{% for m in messages %}{{ '<|' + m['role'] + '|>\\n' + m['content'] + eos_token + '\\n' }}{% endfor %}" \
       "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
CORPUS = ["hello world, how are you today? fine thanks.", "the quick brown fox jumps over the lazy dog.",
          "Dara lives in a small house by the sea; she reads in the evening."]


def tiny_tokenizer():
    """A PreTrainedTokenizerFast with bos <s>, eos </s>, pad <pad> (not yet given the chat template)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS * 20, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", tok.token_to_id("<s>"))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
