// The optional chat template (--chat). Instead of running the Jinja template
// stored in tokenizer.chat_template, the template family is recognized and
// the prompt is written by hand, as llama.cpp's llama_chat_apply_template does:
//   ChatML   (template contains "<|im_start|>"):
//     [<|im_start|>system\n{system}<|im_end|>\n]<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n
//   Llama-3  ("<|start_header_id|>"), message text trimmed as in llama.cpp:
//     [<|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|>]
//     <|start_header_id|>user<|end_header_id|>\n\n{user}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n
//   Llama-2  ("[INST]"):
//     [INST] [<<SYS>>\n{system}\n<</SYS>>\n\n]{user} [/INST]
// The text has no BOS: encode it with tokenizer_add_bos() and parse_special=1.
#ifndef RECALL_TOKENIZER_CHAT_H
#define RECALL_TOKENIZER_CHAT_H

#include "core/status.h"
#include "model/gguf.h"

// Builds the prompt for one user message plus the generation prompt
// (assistant header). system_msg NULL means the template's default: when the
// template text contains a literal system turn (SmolLM2's "You are a helpful
// AI assistant named SmolLM, trained by Hugging Face"), that text is used,
// otherwise there is no system turn. An empty system_msg gives an empty
// system turn. *out_text is malloc'd and NUL-terminated (caller frees).
// Fails when the model has no chat template or its family is not one of the three above.
int chat_format(const gguf_file *f, const char *system_msg, const char *user_msg, char **out_text, rc_err *err);

#endif
