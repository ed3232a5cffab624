#include "eval/head_probe.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/sampler.h"
#include "tokenizer/chat.h"

#define SIZE_TRIES 12  // haystack sizings tried for a prompt of a given length

int head_probe_capture_init(head_probe_capture *c, int64_t n_layer, int64_t n_head, int64_t cap, int n_threads,
                            rc_err *err) {
    memset(c, 0, sizeof(*c));
    c->n_layer = n_layer, c->n_head = n_head, c->cap = cap, c->n_threads = n_threads > 0 ? n_threads : 1;
    c->attn = malloc((size_t)(n_layer * n_head) * (size_t)cap * sizeof(float));
    if (!c->attn)
        return rc_fail(err, "out of memory for the attention rows (%lld heads x %lld positions)",
                       (long long)(n_layer * n_head), (long long)cap);
    return 0;
}

void head_probe_capture_free(head_probe_capture *c) {
    free(c->attn);
    c->attn = NULL;
}

void head_probe_on_attention(void *user, int64_t layer, int64_t n_total, const float *scores, const int64_t *key_pos,
                             int64_t n_keys, const float *lse) {
    head_probe_capture *ac = user;
    if (n_total > ac->cap || n_keys != n_total || layer < 0 || layer >= ac->n_layer)
        return;  // caught by the caller's checks (one rank holds every position)
    ac->n_total = n_total;
    ac->n_layers_seen++;
    double worst = 0.0;
#pragma omp parallel for num_threads(ac->n_threads) schedule(static) reduction(max : worst)
    for (int64_t h = 0; h < ac->n_head; h++) {
        float *row = ac->attn + (layer * ac->n_head + h) * n_total;
        const float *s = scores + h * n_keys;  // scores: (n_head, n_keys)
        double sum = 0.0;
        for (int64_t j = 0; j < n_keys; j++) {
            row[key_pos[j]] = expf(s[j] - lse[h]);
            sum += row[key_pos[j]];
        }
        double errv = isnan(sum) ? INFINITY : fabs(sum - 1.0);
        if (errv > worst) worst = errv;
    }
    if (worst > ac->worst_row_sum_error) ac->worst_row_sum_error = worst;
}

void head_probe_prompt_free(head_probe_prompt *p) {
    probe_example_free(&p->ex);
    free(p->ids);
    p->ids = NULL;
    p->n_ids = 0;
}

// Token positions [begin, end) of the tokens that overlap bytes [b, e) of
// text, the tokens' bytes laid end to end (skipping a leading BOS, which is
// not in the text). SentencePiece models may add one leading space.
static int byte_span_to_tokens(const tokenizer *tok, const int32_t *ids, int64_t n, int has_bos, size_t text_len,
                               size_t b, size_t e, probe_span *out, rc_err *err) {
    size_t total = 0;
    for (int64_t i = has_bos; i < n; i++) total += tokenizer_token_bytes(tok, ids[i], NULL, 0);
    if (total != text_len && total != text_len + 1)
        return rc_fail(err, "profile-heads: the prompt's tokens spell %zu bytes, the prompt has %zu: cannot place "
                            "the needle", total, text_len);
    size_t off = 0, shift = total - text_len;
    out->begin = out->end = -1;
    for (int64_t i = has_bos; i < n; i++) {
        size_t len = tokenizer_token_bytes(tok, ids[i], NULL, 0);
        size_t t0 = off >= shift ? off - shift : 0, t1 = off + len >= shift ? off + len - shift : 0;
        off += len;
        if (t1 > b && t0 < e) {
            if (out->begin < 0) out->begin = i;
            out->end = i + 1;
        }
    }
    if (out->begin < 0) return rc_fail(err, "profile-heads: no token covers the needle's bytes [%zu, %zu)", b, e);
    return 0;
}

int head_probe_make_prompt(const head_probe_setup *ps, int64_t n_hay_bytes, double depth, uint64_t seed,
                           head_probe_prompt *out, rc_err *err) {
    memset(out, 0, sizeof(*out));
    if (probe_make_example(ps->kind, ps->hay, ps->hay_len, n_hay_bytes, depth, seed, &out->ex, err)) return -1;
    char *chat_text = NULL;
    const char *text = out->ex.prompt;
    size_t user_off = 0;
    if (ps->chat) {
        if (chat_format(&ps->m->file, NULL, out->ex.prompt, &chat_text, err)) goto fail;
        const char *at = strstr(chat_text, out->ex.prompt);
        if (!at) {
            rc_fail(err, "profile-heads: the chat template changed the probe text; try --no-chat");
            goto fail;
        }
        user_off = (size_t)(at - chat_text);
        text = chat_text;
    }
    size_t n = 0;
    const int add_bos = tokenizer_add_bos(ps->tok);
    if (tokenizer_encode(ps->tok, text, strlen(text), add_bos, ps->chat, &out->ids, &n, err)) goto fail;
    out->n_ids = (int64_t)n;
    if (byte_span_to_tokens(ps->tok, out->ids, out->n_ids, add_bos, strlen(text), user_off + out->ex.needle_begin,
                            user_off + out->ex.needle_end, &out->needle, err))
        goto fail;
    out->n_answer = out->needle.end - out->needle.begin;
    int32_t *answer_ids = NULL;
    size_t n_answer_ids = 0;
    if (tokenizer_encode(ps->tok, out->ex.answer, strlen(out->ex.answer), 0, 0, &answer_ids, &n_answer_ids, err))
        goto fail;
    free(answer_ids);
    out->n_expected = (int64_t)n_answer_ids;
    free(chat_text);
    return 0;
fail:
    free(chat_text);
    head_probe_prompt_free(out);
    return -1;
}

int head_probe_bytes_per_token(const tokenizer *tok, const char *hay, size_t hay_len, int64_t max_len,
                               double *out, rc_err *err) {
    size_t n_bytes = (size_t)max_len * 6 + 4096;
    if (n_bytes > hay_len) n_bytes = hay_len;
    int32_t *ids = NULL;
    size_t n = 0;
    if (tokenizer_encode(tok, hay, n_bytes, 0, 0, &ids, &n, err)) return -1;
    free(ids);
    if (n == 0) return rc_fail(err, "the haystack text gives no tokens");
    *out = (double)n_bytes / (double)n;
    return 0;
}

int head_probe_sized_prompt(const head_probe_setup *ps, double bytes_per_token, int64_t length, double depth,
                            uint64_t seed, head_probe_prompt *out, rc_err *err) {
    head_probe_prompt bare;  // the prompt without haystack: template, question, needle
    if (head_probe_make_prompt(ps, 0, depth, seed, &bare, err)) return -1;
    const int64_t overhead = bare.n_ids;
    head_probe_prompt_free(&bare);
    if (length - overhead < HEAD_PROBE_MIN_HAYSTACK_TOKENS)
        return rc_fail(err, "--lengths: %lld tokens leave no room for haystack (the probe prompt alone is %lld tokens)",
                       (long long)length, (long long)overhead);
    // Haystack is cut at sentence ends, so the token count is a step
    // function of the byte budget: scale from the measured rate, then bisect
    // between the largest budget known to fit and the smallest known not to.
    double n_bytes = (double)(length - overhead) * bytes_per_token, lo = 0.0, hi = 0.0;
    head_probe_prompt best = {0};
    for (int t = 0; t < SIZE_TRIES; t++) {
        head_probe_prompt cur;
        if (head_probe_make_prompt(ps, (int64_t)n_bytes, depth, seed, &cur, err)) {
            head_probe_prompt_free(&best);
            return -1;
        }
        const int64_t got = cur.n_ids;
        if (got <= length) {
            lo = n_bytes;
            if (got > best.n_ids) {
                head_probe_prompt_free(&best);
                best = cur;
            } else {
                head_probe_prompt_free(&cur);
            }
            if ((double)got >= HEAD_PROBE_SIZE_MIN_FRACTION * (double)length) break;
        } else {
            hi = n_bytes;
            head_probe_prompt_free(&cur);
        }
        const double hay_tokens = (double)(got - overhead > 1 ? got - overhead : 1);
        const double scaled = n_bytes * (double)(length - overhead) / hay_tokens;
        n_bytes = hi > 0.0 && (scaled >= hi || scaled <= lo) ? 0.5 * (lo + hi) : scaled;
    }
    if (best.n_ids > 0) {
        *out = best;
        return 0;
    }
    return rc_fail(err, "profile-heads: could not size a prompt to %lld tokens", (long long)length);
}

static int check_logits(const float *logits, int64_t n_vocab, int64_t step, rc_err *err) {
    for (int64_t v = 0; v < n_vocab; v++)
        if (!isfinite(logits[v]))
            return rc_fail(err, "non-finite logits after %s %lld (token %lld: %g): the model's weights or metadata are "
                                "broken", step < 0 ? "the prefill of" : "decode step", (long long)(step < 0 ? -step : step),
                           (long long)v, (double)logits[v]);
    return 0;
}

int head_probe_run_example(engine *e, head_probe_capture *cap, const head_probe_setup *ps,
                           const head_probe_prompt *pp, int64_t max_new, double *ex_score,
                           engine_progress_fn on_prefill, void *user, head_probe_outcome *out, rc_err *err) {
    const model_config *cfg = &ps->m->cfg;
    const tokenizer *tok = ps->tok;
    const int64_t n = pp->n_ids, n_heads_total = cfg->n_layer * cfg->n_head;
    memset(out, 0, sizeof(*out));
    if (n < 2 || n + max_new > cap->cap)
        return rc_fail(err, "profile-heads: a prompt of %lld tokens and %lld answer tokens does not fit the %lld "
                            "positions captured", (long long)n, (long long)max_new, (long long)cap->cap);
    const size_t piece_cap = tokenizer_decode_cap(tok);
    const size_t answer_cap = (size_t)max_new * (piece_cap + 1) + 8;
    int32_t *seq = malloc((size_t)(n + max_new) * sizeof(int32_t));
    char *piece = malloc(piece_cap + 1);
    out->answer = malloc(answer_cap);
    if (!seq || !piece || !out->answer) {
        free(seq), free(piece), free(out->answer);
        out->answer = NULL;
        return rc_fail(err, "out of memory for a probe example");
    }
    memcpy(seq, pp->ids, (size_t)n * sizeof(int32_t));
    int rc = -1;
    engine_reset(e);
    if (engine_prefill(e, pp->ids, n - 1, NULL, on_prefill, user, err)) goto done;
    if (check_logits(engine_logits(e), cfg->n_vocab, -(n - 1), err)) goto done;
    memset(ex_score, 0, (size_t)n_heads_total * sizeof(double));
    tokenizer_stream st = {0};
    size_t answer_len = 0;
    char *answer = out->answer;
    answer[0] = '\0';
    int32_t cur = pp->ids[n - 1];
    // R2 answers are cut at the expected answer's length, as in HeadKV's
    // retrieval_head_detection_r2.py: the name is what gets judged, not
    // the "... is older than ..." a model may add after it.
    const int64_t n_steps = ps->kind == PROBE_R2 && pp->n_expected < max_new ? pp->n_expected : max_new;
    for (int64_t step = 0; step < n_steps; step++) {
        cap->n_layers_seen = 0;
        if (engine_decode(e, cur, err)) goto done;
        if (cap->n_layers_seen != cfg->n_layer || cap->n_total != n + step) {
            rc_fail(err, "profile-heads: the engine reported attention for %lld of %lld layers over %lld positions "
                         "(expected %lld)", (long long)cap->n_layers_seen, (long long)cfg->n_layer,
                    (long long)cap->n_total, (long long)(n + step));
            goto done;
        }
        if (cap->worst_row_sum_error > HEAD_PROBE_ROW_SUM_TOLERANCE) {
            rc_fail(err, "profile-heads: attention rows from the engine's scores sum to 1 +- %.3g, not within %.0e: "
                         "the scores are not the softmax the engine computed",
                    cap->worst_row_sum_error, HEAD_PROBE_ROW_SUM_TOLERANCE);
            goto done;
        }
        if (check_logits(engine_logits(e), cfg->n_vocab, step, err)) goto done;
        int32_t next = argmax_logits(engine_logits(e), cfg->n_vocab);
        if (tokenizer_is_eog(tok, next)) break;
        if (ps->kind == PROBE_R)
            probe_r_step(cap->attn, n_heads_total, cap->n_total, seq, pp->needle, next, pp->n_answer, ex_score);
        else
            probe_r2_step(cap->attn, n_heads_total, cap->n_total, pp->needle, pp->n_answer, pp->n_answer, ex_score);
        out->n_gen++;
        size_t len = tokenizer_decode_stream(tok, &st, next, piece, piece_cap);
        memcpy(answer + answer_len, piece, len);
        answer_len += len;
        answer[answer_len] = '\0';
        seq[n + step] = next;
        cur = next;
        // A newline ends the answer once it has some text (as the reference code stops at "\n").
        if (memchr(piece, '\n', len)) {
            int has_text = 0;
            for (size_t i = 0; i < answer_len && !has_text; i++)
                has_text = answer[i] != ' ' && answer[i] != '\n' && answer[i] != '\r' && answer[i] != '\t';
            if (has_text) break;
        }
    }
    answer_len += tokenizer_stream_flush(tok, &st, answer + answer_len, answer_cap - answer_len - 1);
    answer[answer_len] = '\0';
    out->f1 = probe_f1(answer, pp->ex.answer);
    out->counted = out->f1 > PROBE_F1_MIN;
    rc = 0;
done:
    free(seq);
    free(piece);
    if (rc) {
        free(out->answer);
        out->answer = NULL;
    }
    return rc;
}
