// Scoring a model's answer against expected answers, for `recall eval custom`.
//   contains  RULER's string match: the answer occurs in the output, ignoring
//             ASCII case (ruler_score, so it is the same test as eval ruler's)
//   exact     the output equals the answer after SQuAD's normalization:
//             ASCII lower case, punctuation and the articles a/an/the removed,
//             whitespace collapsed
//   f1        SQuAD/LongBench token F1 over the normalized words:
//             2 P R / (P + R), P = common / output words, R = common / answer words
// Several expected answers: "any" takes the best answer's score (LongBench's
// max over ground truths), "all" the mean over answers (RULER's
// string_match_all: the fraction found).
#ifndef RECALL_EVAL_SCORE_H
#define RECALL_EVAL_SCORE_H

typedef enum score_metric { SCORE_CONTAINS, SCORE_EXACT, SCORE_F1 } score_metric;
typedef enum score_combine { SCORE_ANY, SCORE_ALL } score_combine;

// 0 and *out set, or -1 for an unknown name.
int score_metric_parse(const char *name, score_metric *out);
int score_combine_parse(const char *name, score_combine *out);
const char *score_metric_name(score_metric m);
const char *score_combine_name(score_combine c);

// One expected answer, 0..1. A NULL output scores 0.
double score_answer(score_metric m, const char *output, const char *answer);
// Several, combined; 0 when n_answers < 1.
double score_output(score_metric m, score_combine c, const char *output, const char *const *answers, int n_answers);

#endif
