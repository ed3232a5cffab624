// src/eval/custom_data.c: the JSONL reader of `recall eval custom`, on
// hand-written buffers: every field form it accepts, and for each kind of bad
// line the exact "name:line:" it reports. Also the file reader on a line far
// over the limit (read in chunks, refused without holding it) and the template.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "eval/custom_data.h"

static int parse(const char *text, custom_data *d, rc_err *err) {
    return custom_data_parse(text, strlen(text), "t.jsonl", CUSTOM_MAX_LINE_BYTES, d, err);
}

// The text must be refused with a message that starts with want.
static void expect_error(const char *text, const char *want) {
    custom_data d;
    rc_err err = {{0}};
    const int rc = parse(text, &d, &err);
    CHECK_MSG(rc == -1 && !strncmp(err.msg, want, strlen(want)), "input [%s]: rc %d, message [%s], want [%s...]", text,
              rc, err.msg, want);
    custom_data_free(&d);
}

static void test_good(void) {
    const char *text =
        "{\"prompt\": \"What is 2+2?\", \"answers\": \"4\"}\n"
        "\n"  // blank lines are skipped
        "{\"context\": \"C\", \"question\": \"Q\", \"answers\": [\"a\", \"b\"], \"id\": \"x\", \"max_new_tokens\": 7,"
        " \"chat\": false, \"length\": 12}\r\n"
        "{\"context\": \"ctx\", \"input\": \"in\", \"answers\": [\"z\"], \"_id\": 42, \"chat\": true}";  // no final newline
    custom_data d;
    rc_err err = {{0}};
    CHECK_MSG(parse(text, &d, &err) == 0, "%s", err.msg);
    CHECK(d.n == 3);
    if (d.n != 3) return;
    const custom_sample *a = &d.samples[0], *b = &d.samples[1], *c = &d.samples[2];
    CHECK(a->line == 1 && !strcmp(a->prompt, "What is 2+2?") && !a->context && !a->id);
    CHECK(a->n_answers == 1 && !strcmp(a->answers[0], "4") && a->max_new_tokens == 0 && a->chat == -1);
    CHECK(b->line == 3 && !b->prompt && !strcmp(b->context, "C") && !strcmp(b->question, "Q"));
    CHECK(b->n_answers == 2 && !strcmp(b->answers[1], "b") && !strcmp(b->id, "x"));
    CHECK(b->max_new_tokens == 7 && b->chat == 0);
    CHECK(c->line == 4 && !strcmp(c->question, "in") && !strcmp(c->id, "42") && c->chat == 1);

    char *t = custom_sample_text(b, "[{context}|{question}|{context}]");
    CHECK(t && !strcmp(t, "[C|Q|C]"));
    free(t);
    t = custom_sample_text(a, CUSTOM_DEFAULT_TEMPLATE);  // a prompt is taken as it is
    CHECK(t && !strcmp(t, "What is 2+2?"));
    free(t);
    t = custom_sample_text(c, CUSTOM_DEFAULT_TEMPLATE);
    CHECK(t && !strcmp(t, "ctx\n\nin"));
    free(t);
    custom_data_free(&d);
    CHECK(d.samples == NULL && d.n == 0);
    CHECK(custom_template_check("{context} {question}", &err) == 0);
    CHECK(custom_template_check("{context} only", &err) == -1);
}

static void test_bad(void) {
    const char *ok = "{\"prompt\":\"p\",\"answers\":\"a\"}\n";
    char buf[512];
    expect_error("", "t.jsonl:1: no samples: the file is empty");
    expect_error("\n  \n", "t.jsonl:2: no samples: the file is empty");
    snprintf(buf, sizeof(buf), "%s{\"prompt\": \"p\", \"answers\": \n", ok);
    expect_error(buf, "t.jsonl:2: not JSON");
    expect_error("hello\n", "t.jsonl:1: not JSON");
    expect_error("{\"prompt\":\"p\",\"answers\":\"a\"} {\"x\":1}\n", "t.jsonl:1: text after the JSON object at column 30");
    expect_error("[1, 2]\n", "t.jsonl:1: expected a JSON object, not an array");
    expect_error("{\"answers\":\"a\"}\n", "t.jsonl:1: missing \"prompt\" (or \"context\" and \"question\")");
    expect_error("{\"context\":\"c\",\"answers\":\"a\"}\n", "t.jsonl:1: \"context\" without \"question\"");
    expect_error("{\"question\":\"q\",\"answers\":\"a\"}\n", "t.jsonl:1: \"question\" without \"context\"");
    expect_error("{\"prompt\":\"p\",\"context\":\"c\",\"answers\":\"a\"}\n", "t.jsonl:1: give \"prompt\" or");
    expect_error("{\"prompt\":\"p\"}\n", "t.jsonl:1: missing \"answers\"");
    snprintf(buf, sizeof(buf), "%s%s{\"prompt\":7,\"answers\":\"a\"}\n", ok, ok);
    expect_error(buf, "t.jsonl:3: \"prompt\" must be a string, not a number");
    expect_error("{\"context\":[],\"question\":\"q\",\"answers\":\"a\"}\n", "t.jsonl:1: \"context\" must be a string, not an array");
    expect_error("{\"prompt\":\"p\",\"answers\":3}\n", "t.jsonl:1: \"answers\" must be a string or a list of strings, not a number");
    expect_error("{\"prompt\":\"p\",\"answers\":[]}\n", "t.jsonl:1: \"answers\" is an empty list");
    expect_error("{\"prompt\":\"p\",\"answers\":[\"a\",null]}\n", "t.jsonl:1: \"answers\"[1] must be a string, not null");
    expect_error("{\"prompt\":\"p\",\"answers\":[\"a\",\"\"]}\n", "t.jsonl:1: \"answers\"[1] is an empty string");
    expect_error("{\"prompt\":\"p\",\"answers\":\"a\",\"id\":1.5}\n", "t.jsonl:1: \"id\" must be a non-empty string or an integer");
    expect_error("{\"prompt\":\"p\",\"answers\":\"a\",\"id\":true}\n", "t.jsonl:1: \"id\" must be a non-empty string or an integer, not a boolean");
    expect_error("{\"prompt\":\"p\",\"answers\":\"a\",\"max_new_tokens\":0}\n", "t.jsonl:1: \"max_new_tokens\" must be an integer from 1");
    expect_error("{\"prompt\":\"p\",\"answers\":\"a\",\"max_new_tokens\":\"9\"}\n", "t.jsonl:1: \"max_new_tokens\" must be an integer from 1 to 1048576, not a string");
    expect_error("{\"prompt\":\"p\",\"answers\":\"a\",\"chat\":1}\n", "t.jsonl:1: \"chat\" must be true or false, not a number");
    expect_error("{\"prompt\":\"p\",\"answers\":\"a\",\"id\":\"k\"}\n{\"prompt\":\"q\",\"answers\":\"a\",\"id\":\"k\"}\n",
                 "t.jsonl:2: id \"k\" is already used on line 1");
    static const char nul[] = "{\"prompt\":\"p\",\"answers\":\"a\"}\n{\"prompt\":\"p\0\"}\n";
    custom_data d;
    rc_err err = {{0}};
    CHECK(custom_data_parse(nul, sizeof(nul) - 1, "t.jsonl", CUSTOM_MAX_LINE_BYTES, &d, &err) == -1);
    CHECK_MSG(!strncmp(err.msg, "t.jsonl:2: a NUL byte at column 13", 34), "%s", err.msg);
    custom_data_free(&d);
    // A line over the limit (here 16 bytes), in memory.
    CHECK(custom_data_parse(ok, strlen(ok), "t.jsonl", 16, &d, &err) == -1);
    CHECK_MSG(!strncmp(err.msg, "t.jsonl:1: the line is longer than 16 bytes", 43), "%s", err.msg);
    custom_data_free(&d);
}

// The file reader: the same samples as the buffer reader; a 5 MiB line with a
// 1 MiB limit is refused after reading about 1 MiB of it, naming its line.
static void test_file(void) {
    char path[] = "/tmp/recall_custom_data_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd < 0) return;
    FILE *f = fdopen(fd, "w");
    fprintf(f, "{\"prompt\":\"p\",\"answers\":\"a\"}\n{\"prompt\":\"");
    for (int i = 0; i < 5 << 20; i++) fputc('x', f);
    fprintf(f, "\",\"answers\":\"a\"}\n");
    fclose(f);
    custom_data d;
    rc_err err = {{0}};
    CHECK(custom_data_load(path, (size_t)1 << 20, &d, &err) == -1);
    char want[512];
    snprintf(want, sizeof(want), "%s:2: the line is longer than 1048576 bytes (1 MiB)", path);
    CHECK_MSG(!strcmp(err.msg, want), "[%s] vs [%s]", err.msg, want);
    custom_data_free(&d);
    CHECK_MSG(custom_data_load(path, (size_t)8 << 20, &d, &err) == 0, "%s", err.msg);
    CHECK(d.n == 2 && d.samples[1].line == 2 && strlen(d.samples[1].prompt) == (size_t)5 << 20);
    custom_data_free(&d);
    f = fopen(path, "w");
    fclose(f);
    CHECK(custom_data_load(path, CUSTOM_MAX_LINE_BYTES, &d, &err) == -1);
    snprintf(want, sizeof(want), "%s:1: no samples: the file is empty", path);
    CHECK_MSG(!strncmp(err.msg, want, strlen(want)), "%s", err.msg);
    custom_data_free(&d);
    unlink(path);
    CHECK(custom_data_load("/nonexistent/x.jsonl", CUSTOM_MAX_LINE_BYTES, &d, &err) == -1);
    CHECK(strstr(err.msg, "/nonexistent/x.jsonl: cannot open") == err.msg);
    CHECK(custom_data_load("/tmp", CUSTOM_MAX_LINE_BYTES, &d, &err) == -1);
    CHECK(strstr(err.msg, "is a directory") != NULL);
}

int main(void) {
    test_good();
    test_bad();
    test_file();
    TEST_MAIN_END();
}
