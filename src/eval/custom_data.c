#include "eval/custom_data.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#define READ_CHUNK_BYTES ((size_t)1 << 20)

static const char *type_name(const cJSON *v) {
    if (cJSON_IsString(v)) return "a string";
    if (cJSON_IsNumber(v)) return "a number";
    if (cJSON_IsBool(v)) return "a boolean";
    if (cJSON_IsNull(v)) return "null";
    if (cJSON_IsArray(v)) return "an array";
    if (cJSON_IsObject(v)) return "an object";
    return "an invalid value";
}

static void sample_free(custom_sample *s) {
    free(s->id);
    free(s->prompt);
    free(s->context);
    free(s->question);
    for (int i = 0; i < s->n_answers; i++) free(s->answers[i]);
    free(s->answers);
    memset(s, 0, sizeof(*s));
}

void custom_data_free(custom_data *d) {
    if (!d) return;
    for (int64_t i = 0; i < d->n; i++) sample_free(&d->samples[i]);
    free(d->samples);
    memset(d, 0, sizeof(*d));
}

static int oom(rc_err *err) { return rc_fail(err, "out of memory reading the data"); }

// An optional string field: 0 absent, 1 present (*out strdup'd), -1 error.
static int get_string(const cJSON *o, const char *key, char **out, const char *name, int64_t line, rc_err *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v) return 0;
    if (!cJSON_IsString(v))
        return rc_fail(err, "%s:%lld: \"%s\" must be a string, not %s", name, (long long)line, key, type_name(v));
    if (!(*out = strdup(v->valuestring))) return oom(err);
    return 1;
}

// An integral JSON number in [lo, hi].
static int is_int_in(const cJSON *v, double lo, double hi) {
    return cJSON_IsNumber(v) && v->valuedouble == floor(v->valuedouble) && v->valuedouble >= lo && v->valuedouble <= hi;
}

static int parse_answers(const cJSON *v, custom_sample *s, const char *name, int64_t line, rc_err *err) {
    if (!v) return rc_fail(err, "%s:%lld: missing \"answers\" (a string or a list of strings)", name, (long long)line);
    const int list = cJSON_IsArray(v);
    if (!list && !cJSON_IsString(v))
        return rc_fail(err, "%s:%lld: \"answers\" must be a string or a list of strings, not %s", name,
                       (long long)line, type_name(v));
    const int n = list ? cJSON_GetArraySize(v) : 1;
    if (n == 0) return rc_fail(err, "%s:%lld: \"answers\" is an empty list", name, (long long)line);
    if (!(s->answers = calloc((size_t)n, sizeof(char *)))) return oom(err);
    for (int i = 0; i < n; i++) {
        const cJSON *a = list ? cJSON_GetArrayItem(v, i) : v;
        if (!cJSON_IsString(a))
            return rc_fail(err, "%s:%lld: \"answers\"[%d] must be a string, not %s", name, (long long)line, i,
                           type_name(a));
        if (!a->valuestring[0]) {  // an empty answer is found in every output
            char where[32] = "";
            if (list) snprintf(where, sizeof(where), "[%d]", i);
            return rc_fail(err, "%s:%lld: \"answers\"%s is an empty string", name, (long long)line, where);
        }
        if (!(s->answers[i] = strdup(a->valuestring))) return oom(err);
        s->n_answers = i + 1;
    }
    return 0;
}

static int parse_object(const cJSON *o, custom_sample *s, const char *name, int64_t line, rc_err *err) {
    int rc;
    if ((rc = get_string(o, "prompt", &s->prompt, name, line, err)) < 0) return -1;
    if ((rc = get_string(o, "context", &s->context, name, line, err)) < 0) return -1;
    const char *qkey = cJSON_GetObjectItemCaseSensitive(o, "question") ? "question" : "input";
    if ((rc = get_string(o, qkey, &s->question, name, line, err)) < 0) return -1;
    if (s->prompt && (s->context || s->question))
        return rc_fail(err, "%s:%lld: give \"prompt\" or \"context\" and \"%s\", not both", name, (long long)line,
                       qkey);
    if (!s->prompt && !s->context && !s->question)
        return rc_fail(err, "%s:%lld: missing \"prompt\" (or \"context\" and \"question\")", name, (long long)line);
    if (!s->prompt && (!s->context || !s->question))
        return rc_fail(err, "%s:%lld: \"%s\" without \"%s\" (give both, or \"prompt\")", name, (long long)line,
                       s->context ? "context" : qkey, s->context ? "question" : "context");
    if (parse_answers(cJSON_GetObjectItemCaseSensitive(o, "answers"), s, name, line, err)) return -1;

    const char *id_key = cJSON_GetObjectItemCaseSensitive(o, "id") ? "id" : "_id";
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(o, id_key);
    if (id) {
        char num[32];
        if (cJSON_IsString(id) && id->valuestring[0]) {
            s->id = strdup(id->valuestring);
        } else if (is_int_in(id, -9007199254740992.0, 9007199254740992.0)) {  // exact in a double
            snprintf(num, sizeof(num), "%lld", (long long)id->valuedouble);
            s->id = strdup(num);
        } else {
            return rc_fail(err, "%s:%lld: \"%s\" must be a non-empty string or an integer, not %s", name,
                           (long long)line, id_key, cJSON_IsString(id) ? "an empty string" : type_name(id));
        }
        if (!s->id) return oom(err);
    }
    const cJSON *mn = cJSON_GetObjectItemCaseSensitive(o, "max_new_tokens");
    if (mn) {
        if (!is_int_in(mn, 1, (double)CUSTOM_MAX_NEW_TOKENS))
            return rc_fail(err, "%s:%lld: \"max_new_tokens\" must be an integer from 1 to %lld, not %s", name,
                           (long long)line, (long long)CUSTOM_MAX_NEW_TOKENS,
                           cJSON_IsNumber(mn) ? "that number" : type_name(mn));
        s->max_new_tokens = (int64_t)mn->valuedouble;
    }
    const cJSON *chat = cJSON_GetObjectItemCaseSensitive(o, "chat");
    s->chat = -1;
    if (chat) {
        if (!cJSON_IsBool(chat))
            return rc_fail(err, "%s:%lld: \"chat\" must be true or false, not %s", name, (long long)line,
                           type_name(chat));
        s->chat = cJSON_IsTrue(chat) ? 1 : 0;
    }
    return 0;
}

// One line, without its '\n'.
static int add_line(custom_data *d, int64_t *cap, const char *name, int64_t line, const char *text, size_t len,
                    rc_err *err) {
    if (len && text[len - 1] == '\r') len--;
    const char *nul = memchr(text, '\0', len);
    if (nul)
        return rc_fail(err, "%s:%lld: a NUL byte at column %zu (not a text file)", name, (long long)line,
                       (size_t)(nul - text) + 1);
    size_t i = 0;
    while (i < len && isspace((unsigned char)text[i])) i++;
    if (i == len) return 0;  // blank line
    const char *end = NULL;
    cJSON *o = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!o) {
        size_t col = end && end >= text && end <= text + len ? (size_t)(end - text) + 1 : 1;
        return rc_fail(err, "%s:%lld: not JSON (error near column %zu); expected one JSON object per line", name,
                       (long long)line, col);
    }
    for (const char *p = end; p < text + len; p++)
        if (!isspace((unsigned char)*p)) {
            cJSON_Delete(o);
            return rc_fail(err, "%s:%lld: text after the JSON object at column %zu; expected one object per line",
                           name, (long long)line, (size_t)(p - text) + 1);
        }
    if (!cJSON_IsObject(o)) {
        int rc = rc_fail(err, "%s:%lld: expected a JSON object, not %s", name, (long long)line, type_name(o));
        cJSON_Delete(o);
        return rc;
    }
    if (d->n == *cap) {
        int64_t ncap = *cap ? 2 * *cap : 64;
        custom_sample *ns = realloc(d->samples, (size_t)ncap * sizeof(*ns));
        if (!ns) {
            cJSON_Delete(o);
            return oom(err);
        }
        d->samples = ns;
        *cap = ncap;
    }
    custom_sample *s = &d->samples[d->n++];
    memset(s, 0, sizeof(*s));
    s->line = line;
    int rc = parse_object(o, s, name, line, err);
    cJSON_Delete(o);
    return rc;
}

static int cmp_by_id(const void *a, const void *b) {
    const custom_sample *x = *(custom_sample *const *)a, *y = *(custom_sample *const *)b;
    int c = strcmp(x->id, y->id);
    return c ? c : (x->line > y->line) - (x->line < y->line);
}

// After the last line: at least one sample, ids unique.
static int finish(custom_data *d, const char *name, int64_t n_lines, rc_err *err) {
    if (d->n == 0)
        return rc_fail(err, "%s:%lld: no samples: the file is empty (expected one JSON object per line)", name,
                       (long long)(n_lines > 0 ? n_lines : 1));
    custom_sample **by_id = malloc((size_t)d->n * sizeof(*by_id));
    if (!by_id) return oom(err);
    int64_t n = 0;
    for (int64_t i = 0; i < d->n; i++)
        if (d->samples[i].id) by_id[n++] = &d->samples[i];
    qsort(by_id, (size_t)n, sizeof(*by_id), cmp_by_id);
    int rc = 0;
    for (int64_t i = 1; i < n && !rc; i++)
        if (!strcmp(by_id[i]->id, by_id[i - 1]->id))
            rc = rc_fail(err, "%s:%lld: id \"%s\" is already used on line %lld", name, (long long)by_id[i]->line,
                         by_id[i]->id, (long long)by_id[i - 1]->line);
    free(by_id);
    return rc;
}

static int too_long(const char *name, int64_t line, size_t max_line_bytes, rc_err *err) {
    return rc_fail(err, "%s:%lld: the line is longer than %zu bytes (%zu MiB)", name, (long long)line, max_line_bytes,
                   max_line_bytes >> 20);
}

int custom_data_parse(const char *buf, size_t len, const char *name, size_t max_line_bytes, custom_data *out,
                      rc_err *err) {
    memset(out, 0, sizeof(*out));
    int64_t cap = 0, line = 0;
    size_t pos = 0;
    while (pos < len) {
        line++;
        const char *nl = memchr(buf + pos, '\n', len - pos);
        const size_t n = nl ? (size_t)(nl - (buf + pos)) : len - pos;
        if (n > max_line_bytes) return too_long(name, line, max_line_bytes, err);
        if (add_line(out, &cap, name, line, buf + pos, n, err)) return -1;
        pos += n + (nl != NULL);
    }
    return finish(out, name, line, err);
}

int custom_data_load(const char *path, size_t max_line_bytes, custom_data *out, rc_err *err) {
    memset(out, 0, sizeof(*out));
    FILE *f = fopen(path, "rb");
    if (!f) return rc_fail(err, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
        fclose(f);
        return rc_fail(err, "%s: is a directory, not a JSONL file", path);
    }
    char *chunk = malloc(READ_CHUNK_BYTES), *line = NULL;
    size_t line_len = 0, line_cap = 0, got;
    int64_t cap = 0, lineno = 1;
    int rc = chunk ? 0 : oom(err);
    while (!rc && (got = fread(chunk, 1, READ_CHUNK_BYTES, f)) > 0) {
        size_t pos = 0;
        while (!rc && pos < got) {
            const char *nl = memchr(chunk + pos, '\n', got - pos);
            const size_t take = nl ? (size_t)(nl - (chunk + pos)) : got - pos;
            if (line_len + take > max_line_bytes) {
                rc = too_long(path, lineno, max_line_bytes, err);
                break;
            }
            if (line_len + take > line_cap) {
                size_t ncap = line_cap ? line_cap : 4096;
                while (ncap < line_len + take) ncap *= 2;
                char *nline = realloc(line, ncap);
                if (!nline) {
                    rc = oom(err);
                    break;
                }
                line = nline;
                line_cap = ncap;
            }
            memcpy(line + line_len, chunk + pos, take);
            line_len += take;
            pos += take;
            if (nl) {
                rc = add_line(out, &cap, path, lineno, line, line_len, err);
                line_len = 0;
                lineno++;
                pos++;
            }
        }
    }
    if (!rc && ferror(f)) rc = rc_fail(err, "%s:%lld: read error: %s", path, (long long)lineno, strerror(errno));
    if (!rc && line_len) rc = add_line(out, &cap, path, lineno, line, line_len, err);  // no final newline
    if (!rc) rc = finish(out, path, line_len ? lineno : lineno - 1, err);
    free(line);
    free(chunk);
    fclose(f);
    return rc;
}

int custom_template_check(const char *tmpl, rc_err *err) {
    if (!strstr(tmpl, "{context}") || !strstr(tmpl, "{question}"))
        return rc_fail(err, "--template must contain {context} and {question}, e.g. '%s' (\\n is a line break)",
                       "{context}\\n\\n{question}");
    return 0;
}

char *custom_sample_text(const custom_sample *s, const char *tmpl) {
    if (s->prompt) return strdup(s->prompt);
    const size_t lc = strlen(s->context), lq = strlen(s->question);
    size_t n = 0;
    for (const char *p = tmpl; *p;) {  // the length first
        if (!strncmp(p, "{context}", 9)) n += lc, p += 9;
        else if (!strncmp(p, "{question}", 10)) n += lq, p += 10;
        else n++, p++;
    }
    char *out = malloc(n + 1), *w = out;
    if (!out) return NULL;
    for (const char *p = tmpl; *p;) {
        if (!strncmp(p, "{context}", 9)) memcpy(w, s->context, lc), w += lc, p += 9;
        else if (!strncmp(p, "{question}", 10)) memcpy(w, s->question, lq), w += lq, p += 10;
        else *w++ = *p++;
    }
    *w = '\0';
    return out;
}
