// Chat prompt formatting for the three template families recall knows. The
// Jinja template itself is only inspected: to recognize the family and to
// read a default system message written into it as a literal.
#define _GNU_SOURCE  // memmem
#include "tokenizer/chat.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/strbuf.h"

enum chat_family { CHAT_CHATML, CHAT_LLAMA3, CHAT_LLAMA2 };

// Lexical state of each template byte, enough to tell literal text (raw
// template text, or a quoted string inside {{ }} / {% %}) from code.
enum { LEX_RAW, LEX_CODE, LEX_STR, LEX_COMMENT };

typedef struct lexed {
    unsigned char *state;
    uint32_t *segment;  // bytes of one uninterrupted literal share a segment number
} lexed;

static int lex_template(const char *s, size_t n, lexed *lx) {
    lx->state = malloc(n + 1);
    lx->segment = malloc((n + 1) * sizeof(uint32_t));
    if (!lx->state || !lx->segment) return -1;
    int st = LEX_RAW;
    char quote = 0;
    uint32_t seg = 0;
    for (size_t i = 0; i < n;) {
        size_t step = 1;
        int next = st;
        switch (st) {
        case LEX_RAW:
            if (i + 1 < n && s[i] == '{' && (s[i + 1] == '{' || s[i + 1] == '%')) next = LEX_CODE, step = 2;
            else if (i + 1 < n && s[i] == '{' && s[i + 1] == '#') next = LEX_COMMENT, step = 2;
            break;
        case LEX_CODE:
            if (i + 1 < n && (s[i] == '}' || s[i] == '%') && s[i + 1] == '}') next = LEX_RAW, step = 2;
            else if (s[i] == '\'' || s[i] == '"') next = LEX_STR, quote = s[i];
            break;
        case LEX_STR:
            if (s[i] == '\\' && i + 1 < n) step = 2;
            else if (s[i] == quote) next = LEX_CODE;
            break;
        case LEX_COMMENT:
            if (i + 1 < n && s[i] == '#' && s[i + 1] == '}') next = LEX_RAW, step = 2;
            break;
        }
        // Delimiters belong to the code around them, so a literal's segment
        // holds exactly its contents.
        int mark = next != st ? LEX_CODE : st;
        if (next != st) seg++;
        for (size_t k = 0; k < step && i + k < n; k++) {
            lx->state[i + k] = (unsigned char)mark;
            lx->segment[i + k] = seg;
        }
        if (next != st && next != LEX_CODE) seg++;
        st = next;
        i += step;
    }
    return 0;
}

// Copies s[0..n) undoing Jinja string escapes when escaped is set.
static size_t unescape(const char *s, size_t n, int escaped, char *out) {
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (escaped && s[i] == '\\' && i + 1 < n) {
            char c = s[++i];
            out[m++] = c == 'n' ? '\n' : c == 't' ? '\t' : c == 'r' ? '\r' : c;
        } else {
            out[m++] = s[i];
        }
    }
    out[m] = 0;
    return m;
}

// Finds "<start><newlines><text><end>" written as one literal in the
// template and returns text (malloc'd), or NULL if there is none. The
// newlines after start may be real or escaped ("\n" inside a string).
static char *find_literal_turn(const char *tmpl, size_t n, const lexed *lx, const char *start, const char *newlines,
                               const char *end) {
    size_t ls = strlen(start), le = strlen(end), ln = strlen(newlines);
    for (const char *p = tmpl; (p = memmem(p, n - (size_t)(p - tmpl), start, ls)) != NULL; p++) {
        size_t at = (size_t)(p - tmpl);
        int st = lx->state[at];
        if (st != LEX_RAW && st != LEX_STR) continue;
        size_t body = at + ls;
        // the newlines, raw or (inside a string) as "\n" escapes
        size_t k = 0;
        while (k < ln && body < n) {
            if (tmpl[body] == '\n') body++;
            else if (st == LEX_STR && body + 1 < n && tmpl[body] == '\\' && tmpl[body + 1] == 'n') body += 2;
            else break;
            k++;
        }
        if (k < ln) continue;
        const char *q = memmem(tmpl + body, n - body, end, le);
        if (!q) continue;
        size_t stop = (size_t)(q - tmpl) + le;
        int same = 1;
        for (size_t i = at; i < stop; i++)
            if (lx->segment[i] != lx->segment[at]) {
                same = 0;
                break;
            }
        if (!same) continue;
        size_t len = (size_t)(q - tmpl) - body;
        char *out = malloc(len + 1);
        if (!out) return NULL;
        unescape(tmpl + body, len, st == LEX_STR, out);
        return out;
    }
    return NULL;
}


// Adds s without leading/trailing ASCII whitespace (llama.cpp's trim()).
static void sb_trimmed(strbuf *b, const char *s) {
    size_t i = 0, j = strlen(s);
    while (i < j && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r' || s[i] == '\v' || s[i] == '\f')) i++;
    while (j > i && (s[j - 1] == ' ' || s[j - 1] == '\t' || s[j - 1] == '\n' || s[j - 1] == '\r' ||
                     s[j - 1] == '\v' || s[j - 1] == '\f'))
        j--;
    sb_put(b, s + i, j - i);
}

int chat_format(const gguf_file *f, const char *system_msg, const char *user_msg, char **out_text, rc_err *err) {
    *out_text = NULL;
    if (!user_msg) return rc_fail(err, "chat_format: no user message");
    if (!gguf_find(f, "tokenizer.chat_template"))
        return rc_fail(err, "%s: the model has no chat template (tokenizer.chat_template); run without --chat", f->path);
    gguf_str t;
    if (gguf_get_str(f, "tokenizer.chat_template", &t, err)) return -1;

    enum chat_family fam;
    if (memmem(t.ptr, t.n_bytes, "<|im_start|>", 12)) fam = CHAT_CHATML;
    else if (memmem(t.ptr, t.n_bytes, "<|start_header_id|>", 19)) fam = CHAT_LLAMA3;
    else if (memmem(t.ptr, t.n_bytes, "[INST]", 6)) fam = CHAT_LLAMA2;
    else
        return rc_fail(err, "%s: chat template not supported (recall knows ChatML, Llama-3 and Llama-2 templates); "
                       "run without --chat", f->path);

    char *sys_default = NULL;
    if (!system_msg) {
        lexed lx = {0};
        if (lex_template(t.ptr, (size_t)t.n_bytes, &lx)) {
            free(lx.state);
            free(lx.segment);
            return rc_fail(err, "chat_format: out of memory");
        }
        if (fam == CHAT_CHATML)
            sys_default = find_literal_turn(t.ptr, (size_t)t.n_bytes, &lx, "<|im_start|>system", "\n", "<|im_end|>");
        else if (fam == CHAT_LLAMA3)
            sys_default = find_literal_turn(t.ptr, (size_t)t.n_bytes, &lx,
                                            "<|start_header_id|>system<|end_header_id|>", "\n\n", "<|eot_id|>");
        else
            sys_default = find_literal_turn(t.ptr, (size_t)t.n_bytes, &lx, "<<SYS>>", "\n", "<</SYS>>");
        free(lx.state);
        free(lx.segment);
        if (sys_default && fam == CHAT_LLAMA2) {  // the literal ends with the "\n" before <</SYS>>
            size_t l = strlen(sys_default);
            if (l && sys_default[l - 1] == '\n') sys_default[l - 1] = 0;
        }
        system_msg = sys_default;
    }

    strbuf b = {0};
    switch (fam) {
    case CHAT_CHATML:
        if (system_msg) {
            sb_puts(&b, "<|im_start|>system\n");
            sb_puts(&b, system_msg);
            sb_puts(&b, "<|im_end|>\n");
        }
        sb_puts(&b, "<|im_start|>user\n");
        sb_puts(&b, user_msg);
        sb_puts(&b, "<|im_end|>\n<|im_start|>assistant\n");
        break;
    case CHAT_LLAMA3:
        if (system_msg) {
            sb_puts(&b, "<|start_header_id|>system<|end_header_id|>\n\n");
            sb_trimmed(&b, system_msg);
            sb_puts(&b, "<|eot_id|>");
        }
        sb_puts(&b, "<|start_header_id|>user<|end_header_id|>\n\n");
        sb_trimmed(&b, user_msg);
        sb_puts(&b, "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
        break;
    case CHAT_LLAMA2:
        sb_puts(&b, "[INST] ");
        if (system_msg) {
            sb_puts(&b, "<<SYS>>\n");
            sb_puts(&b, system_msg);
            sb_puts(&b, "\n<</SYS>>\n\n");
        }
        sb_puts(&b, user_msg);
        sb_puts(&b, " [/INST]");
        break;
    }
    free(sys_default);
    if (b.oom || !b.p) {
        free(b.p);
        return rc_fail(err, "chat_format: out of memory");
    }
    *out_text = b.p;
    return 0;
}
