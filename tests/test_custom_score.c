// src/eval/score.c on hand-written outputs, with the expected scores worked
// out by hand from the definitions (RULER's string match, SQuAD's normalized
// exact match and token F1) and the any / all combinations.
#include <string.h>

#include "check.h"
#include "eval/score.h"

static void test_contains(void) {
    CHECK(score_answer(SCORE_CONTAINS, "The house is Kellynch Hall.", "kellynch hall") == 1.0);  // case ignored
    CHECK(score_answer(SCORE_CONTAINS, "Somersetshire", "Somerset") == 1.0);                     // a substring counts
    CHECK(score_answer(SCORE_CONTAINS, "Kellynch  Hall", "Kellynch Hall") == 0.0);               // no normalization
    CHECK(score_answer(SCORE_CONTAINS, "", "x") == 0.0);
    CHECK(score_answer(SCORE_CONTAINS, NULL, "x") == 0.0);
}

static void test_exact(void) {
    CHECK(score_answer(SCORE_EXACT, "The Kellynch Hall!", "kellynch hall") == 1.0);  // article, case, punctuation
    CHECK(score_answer(SCORE_EXACT, "  Kellynch\n hall ", "Kellynch Hall") == 1.0);   // whitespace
    CHECK(score_answer(SCORE_EXACT, "It is Kellynch Hall.", "Kellynch Hall") == 0.0);
    CHECK(score_answer(SCORE_EXACT, "an apple", "apple") == 1.0);
    CHECK(score_answer(SCORE_EXACT, "apples", "apple") == 0.0);
    CHECK(score_answer(SCORE_EXACT, "The", "a") == 1.0);  // both empty after normalization
}

static void test_f1(void) {
    // output words {cat, sat}, answer {cat, sat, down}: P = 1, R = 2/3, F1 = 0.8
    CHECK_CLOSE(score_answer(SCORE_F1, "The cat sat.", "cat sat down"), 0.8, 1e-12, 0);
    // output {it, is, kellynch, hall, in, somerset} vs {kellynch, hall}: P = 2/6, R = 1, F1 = 0.5
    CHECK_CLOSE(score_answer(SCORE_F1, "It is Kellynch Hall, in Somerset.", "Kellynch Hall"), 0.5, 1e-12, 0);
    // each answer word matches one output word: "x x y" vs "x z": common 1, P = 1/3, R = 1/2, F1 = 0.4
    CHECK_CLOSE(score_answer(SCORE_F1, "x x y", "x z"), 0.4, 1e-12, 0);
    // "x x" vs "x x x": common 2, P = 1, R = 2/3, F1 = 0.8
    CHECK_CLOSE(score_answer(SCORE_F1, "x x", "x x x"), 0.8, 1e-12, 0);
    CHECK(score_answer(SCORE_F1, "nothing alike", "Kellynch") == 0.0);
    CHECK(score_answer(SCORE_F1, "the", "Kellynch") == 0.0);  // empty output after normalization
    CHECK(score_answer(SCORE_F1, "Kellynch", "Kellynch") == 1.0);
}

static void test_combine(void) {
    const char *const ans[] = {"blue tin box", "red chest", "cellar"};
    const char *out = "It is kept in a blue tin box in the cellar.";
    CHECK(score_output(SCORE_CONTAINS, SCORE_ANY, out, ans, 3) == 1.0);
    CHECK_CLOSE(score_output(SCORE_CONTAINS, SCORE_ALL, out, ans, 3), 2.0 / 3.0, 1e-12, 0);  // 2 of 3 found
    CHECK(score_output(SCORE_EXACT, SCORE_ANY, "Cellar.", ans, 3) == 1.0);
    CHECK_CLOSE(score_output(SCORE_EXACT, SCORE_ALL, "Cellar.", ans, 3), 1.0 / 3.0, 1e-12, 0);
    // F1 of "red box" against each: {blue,tin,box}: common 1, P 1/2, R 1/3 -> 0.4; {red,chest}: 0.5; {cellar}: 0
    CHECK_CLOSE(score_output(SCORE_F1, SCORE_ANY, "red box", ans, 3), 0.5, 1e-12, 0);
    CHECK_CLOSE(score_output(SCORE_F1, SCORE_ALL, "red box", ans, 3), 0.3, 1e-12, 0);
    CHECK(score_output(SCORE_CONTAINS, SCORE_ANY, out, ans, 0) == 0.0);
}

static void test_names(void) {
    score_metric m;
    score_combine c;
    CHECK(score_metric_parse("f1", &m) == 0 && m == SCORE_F1 && !strcmp(score_metric_name(m), "f1"));
    CHECK(score_metric_parse("exact", &m) == 0 && m == SCORE_EXACT);
    CHECK(score_metric_parse("contains", &m) == 0 && m == SCORE_CONTAINS);
    CHECK(score_metric_parse("rouge", &m) == -1);
    CHECK(score_combine_parse("all", &c) == 0 && c == SCORE_ALL && !strcmp(score_combine_name(c), "all"));
    CHECK(score_combine_parse("most", &c) == -1);
}

int main(void) {
    test_contains();
    test_exact();
    test_f1();
    test_combine();
    test_names();
    TEST_MAIN_END();
}
