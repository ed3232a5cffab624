#include "policy/head_scores.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum {
    MAX_FILE_BYTES = 64 << 20,  // a 1000-layer x 1000-head file is ~20 MiB
    MAX_DIM = 1 << 16,          // layers or heads: far beyond any model
};

static const char *const k_std_members[] = {"format", "model", "probe", "n_layer", "n_head", "n_examples", "scores"};

static int probe_name_ok(const char *p) {
    return strcmp(p, "r") == 0 || strcmp(p, "r2") == 0 || strcmp(p, "r+r2") == 0;
}

static int read_file(const char *path, char **text, size_t *n_bytes, rc_err *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return rc_fail(err, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap + 1);
    while (buf) {
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (len < cap) break;
        if (cap >= MAX_FILE_BYTES) {
            fclose(f);
            free(buf);
            return rc_fail(err, "%s: larger than %d MiB, not a head-scores file", path, MAX_FILE_BYTES >> 20);
        }
        cap *= 2;
        char *grown = realloc(buf, cap + 1);
        if (!grown) free(buf);
        buf = grown;
    }
    int read_error = ferror(f);
    fclose(f);
    if (!buf) return rc_fail(err, "%s: out of memory reading the file", path);
    if (read_error) {
        free(buf);
        return rc_fail(err, "%s: read error", path);
    }
    buf[len] = '\0';
    *text = buf;
    *n_bytes = len;
    return 0;
}

// A member that must be an integer in [lo, hi].
static int get_int(const char *path, const cJSON *root, const char *name, int64_t lo, int64_t hi, int64_t *out,
                   rc_err *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, name);
    if (!v) return rc_fail(err, "%s: missing \"%s\"", path, name);
    if (!cJSON_IsNumber(v)) return rc_fail(err, "%s: \"%s\" is not a number", path, name);
    double d = v->valuedouble;
    if (!(d >= (double)lo && d <= (double)hi) || d != floor(d))
        return rc_fail(err, "%s: \"%s\" is %g, expected an integer in [%lld, %lld]", path, name, d, (long long)lo,
                       (long long)hi);
    *out = (int64_t)d;
    return 0;
}

// A member that must be a string shorter than cap bytes.
static int get_string(const char *path, const cJSON *root, const char *name, char *out, size_t cap, rc_err *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, name);
    if (!v) return rc_fail(err, "%s: missing \"%s\"", path, name);
    if (!cJSON_IsString(v)) return rc_fail(err, "%s: \"%s\" is not a string", path, name);
    size_t len = strlen(v->valuestring);
    if (len >= cap) return rc_fail(err, "%s: \"%s\" is %zu bytes long, at most %zu allowed", path, name, len, cap - 1);
    memcpy(out, v->valuestring, len + 1);
    return 0;
}

static int parse_scores(const char *path, const cJSON *root, head_scores *hs, rc_err *err) {
    const cJSON *rows = cJSON_GetObjectItemCaseSensitive(root, "scores");
    if (!rows) return rc_fail(err, "%s: missing \"scores\"", path);
    if (!cJSON_IsArray(rows)) return rc_fail(err, "%s: \"scores\" is not an array of rows", path);
    int n_rows = cJSON_GetArraySize(rows);
    if (n_rows != hs->n_layer)
        return rc_fail(err, "%s: \"scores\" has %d rows, n_layer is %lld", path, n_rows, (long long)hs->n_layer);
    // The shape first: the table is allocated only for numbers the file holds.
    int64_t l = 0;
    for (const cJSON *row = rows->child; row; row = row->next, l++) {
        if (!cJSON_IsArray(row)) return rc_fail(err, "%s: scores[%lld] is not an array", path, (long long)l);
        int n_cols = cJSON_GetArraySize(row);
        if (n_cols != hs->n_head)
            return rc_fail(err, "%s: scores[%lld] has %d numbers, n_head is %lld", path, (long long)l, n_cols,
                           (long long)hs->n_head);
    }
    hs->score = malloc((size_t)(hs->n_layer * hs->n_head) * sizeof(double));
    if (!hs->score) return rc_fail(err, "%s: out of memory", path);
    l = 0;
    for (const cJSON *row = rows->child; row; row = row->next, l++) {
        int64_t h = 0;
        for (const cJSON *v = row->child; v; v = v->next, h++) {
            if (cJSON_IsString(v))
                return rc_fail(err, "%s: scores[%lld][%lld] is the string \"%.32s\", not a number", path,
                               (long long)l, (long long)h, v->valuestring);
            if (!cJSON_IsNumber(v))
                return rc_fail(err, "%s: scores[%lld][%lld] is not a number", path, (long long)l, (long long)h);
            double s = v->valuedouble;
            // cJSON reads 1e999 as inf; bare NaN is not JSON, but check anyway.
            if (isnan(s)) return rc_fail(err, "%s: scores[%lld][%lld] is NaN", path, (long long)l, (long long)h);
            if (isinf(s))
                return rc_fail(err, "%s: scores[%lld][%lld] is infinite (beyond the double range)", path,
                               (long long)l, (long long)h);
            if (s < 0)
                return rc_fail(err, "%s: scores[%lld][%lld] is negative (%g)", path, (long long)l, (long long)h, s);
            hs->score[l * hs->n_head + h] = s == 0 ? 0.0 : s;  // -0 -> 0, as saved: round trips stay exact
        }
    }
    return 0;
}

static int parse_root(const char *path, const cJSON *root, int64_t n_layer, int64_t n_head, head_scores *hs,
                      rc_err *err) {
    if (!cJSON_IsObject(root)) return rc_fail(err, "%s: not a JSON object", path);
    const cJSON *format = cJSON_GetObjectItemCaseSensitive(root, "format");
    if (!format) return rc_fail(err, "%s: missing \"format\" (expected \"%s\")", path, HEAD_SCORES_FORMAT);
    if (!cJSON_IsString(format) || strcmp(format->valuestring, HEAD_SCORES_FORMAT) != 0)
        return rc_fail(err, "%s: format is %s%.64s%s, expected \"%s\"", path, cJSON_IsString(format) ? "\"" : "",
                       cJSON_IsString(format) ? format->valuestring : "not a string",
                       cJSON_IsString(format) ? "\"" : "", HEAD_SCORES_FORMAT);
    if (get_string(path, root, "model", hs->model, sizeof(hs->model), err)) return -1;
    if (get_string(path, root, "probe", hs->probe, sizeof(hs->probe), err)) return -1;
    if (!probe_name_ok(hs->probe))
        return rc_fail(err, "%s: probe is \"%s\", expected \"r\", \"r2\" or \"r+r2\"", path, hs->probe);
    if (get_int(path, root, "n_layer", 1, MAX_DIM, &hs->n_layer, err)) return -1;
    if (get_int(path, root, "n_head", 1, MAX_DIM, &hs->n_head, err)) return -1;
    if (get_int(path, root, "n_examples", 0, INT64_C(1) << 52, &hs->n_examples, err)) return -1;
    if (n_layer > 0 && hs->n_layer != n_layer)
        return rc_fail(err, "%s: %lld layers, the model has %lld", path, (long long)hs->n_layer, (long long)n_layer);
    if (n_head > 0 && hs->n_head != n_head)
        return rc_fail(err, "%s: %lld heads per layer, the model has %lld", path, (long long)hs->n_head,
                       (long long)n_head);
    return parse_scores(path, root, hs, err);
}

int head_scores_load(const char *path, int64_t n_layer, int64_t n_head, head_scores *out, rc_err *err) {
    memset(out, 0, sizeof(*out));
    char *text = NULL;
    size_t len = 0;
    if (read_file(path, &text, &len, err)) return -1;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!root) {
        // cJSON points at the byte where parsing stopped; report it as line:column.
        size_t at = end && end >= text && end <= text + len ? (size_t)(end - text) : 0;
        long line = 1, col = 1;
        for (size_t i = 0; i < at; i++) {
            if (text[i] == '\n') line++, col = 1;
            else col++;
        }
        free(text);
        return rc_fail(err, "%s: not valid JSON (parse error at line %ld, column %ld, byte %zu)", path, line, col, at);
    }
    free(text);
    head_scores hs = {0};
    int rc = parse_root(path, root, n_layer, n_head, &hs, err);
    cJSON_Delete(root);
    if (rc) {
        head_scores_free(&hs);
        return -1;
    }
    *out = hs;
    return 0;
}

// Prints s as a JSON string literal (escaped by cJSON).
static int put_json_string(FILE *f, const char *s) {
    cJSON *item = cJSON_CreateString(s);
    char *text = item ? cJSON_PrintUnformatted(item) : NULL;
    cJSON_Delete(item);
    if (!text) return -1;
    fputs(text, f);
    cJSON_free(text);
    return 0;
}

static int validate_for_save(const char *path, const head_scores *hs, rc_err *err) {
    if (hs->n_layer < 1 || hs->n_head < 1 || hs->n_layer > MAX_DIM || hs->n_head > MAX_DIM)
        return rc_fail(err, "%s: cannot save %lld x %lld head scores", path, (long long)hs->n_layer,
                       (long long)hs->n_head);
    if (!hs->score) return rc_fail(err, "%s: no scores to save", path);
    if (memchr(hs->model, '\0', sizeof(hs->model)) == NULL)
        return rc_fail(err, "%s: model name is not terminated", path);
    if (memchr(hs->probe, '\0', sizeof(hs->probe)) == NULL || !probe_name_ok(hs->probe))
        return rc_fail(err, "%s: probe must be \"r\", \"r2\" or \"r+r2\"", path);
    if (hs->n_examples < 0) return rc_fail(err, "%s: n_examples is negative", path);
    for (int64_t l = 0; l < hs->n_layer; l++)
        for (int64_t h = 0; h < hs->n_head; h++) {
            double s = hs->score[l * hs->n_head + h];
            if (!isfinite(s) || s < 0)
                return rc_fail(err, "%s: score of layer %lld head %lld is %g (must be finite and >= 0)", path,
                               (long long)l, (long long)h, s);
        }
    return 0;
}

static int write_scores(FILE *f, const head_scores *hs, const cJSON *meta) {
    fprintf(f, "{\n  \"format\": \"%s\",\n  \"model\": ", HEAD_SCORES_FORMAT);
    if (put_json_string(f, hs->model)) return -1;
    fprintf(f, ",\n  \"probe\": \"%s\",\n  \"n_layer\": %lld,\n  \"n_head\": %lld,\n  \"n_examples\": %lld,\n",
            hs->probe, (long long)hs->n_layer, (long long)hs->n_head, (long long)hs->n_examples);
    fputs("  \"scores\": [\n", f);
    for (int64_t l = 0; l < hs->n_layer; l++) {
        fputs("    [", f);
        for (int64_t h = 0; h < hs->n_head; h++) {
            double s = hs->score[l * hs->n_head + h];
            fprintf(f, "%s%.17g", h ? ", " : "", s == 0 ? 0.0 : s);  // 17 digits: exact round trip; no "-0"
        }
        fprintf(f, "]%s\n", l + 1 < hs->n_layer ? "," : "");
    }
    fputs("  ]", f);
    for (const cJSON *m = meta ? meta->child : NULL; m; m = m->next) {
        fputs(",\n  ", f);
        if (put_json_string(f, m->string)) return -1;
        char *value = cJSON_PrintUnformatted(m);
        if (!value) return -1;
        fprintf(f, ": %s", value);
        cJSON_free(value);
    }
    fputs("\n}\n", f);
    return 0;
}

int head_scores_save(const char *path, const head_scores *hs, const char *extra_json_meta, rc_err *err) {
    if (validate_for_save(path, hs, err)) return -1;
    cJSON *meta = NULL;
    if (extra_json_meta) {
        meta = cJSON_Parse(extra_json_meta);
        if (!cJSON_IsObject(meta)) {
            cJSON_Delete(meta);
            return rc_fail(err, "%s: the extra metadata is not a JSON object", path);
        }
        for (const cJSON *m = meta->child; m; m = m->next)
            for (size_t i = 0; i < sizeof(k_std_members) / sizeof(k_std_members[0]); i++)
                if (strcmp(m->string, k_std_members[i]) == 0) {
                    cJSON_Delete(meta);
                    return rc_fail(err, "%s: the extra metadata redefines \"%s\"", path, k_std_members[i]);
                }
    }
    size_t tmp_len = strlen(path) + 32;
    char *tmp = malloc(tmp_len);
    if (!tmp) {
        cJSON_Delete(meta);
        return rc_fail(err, "%s: out of memory", path);
    }
    snprintf(tmp, tmp_len, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        rc_fail(err, "%s: cannot create %s: %s", path, tmp, strerror(errno));
        free(tmp);
        cJSON_Delete(meta);
        return -1;
    }
    int bad = write_scores(f, hs, meta);
    bad |= ferror(f);
    bad |= fclose(f) != 0;
    cJSON_Delete(meta);
    if (bad) {
        remove(tmp);
        free(tmp);
        return rc_fail(err, "%s: write error", path);
    }
    if (rename(tmp, path) != 0) {
        rc_fail(err, "%s: cannot rename %s into place: %s", path, tmp, strerror(errno));
        remove(tmp);
        free(tmp);
        return -1;
    }
    free(tmp);
    return 0;
}

void head_scores_free(head_scores *hs) {
    if (!hs) return;
    free(hs->score);
    hs->score = NULL;
    hs->n_layer = hs->n_head = hs->n_examples = 0;
}
