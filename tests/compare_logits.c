// compare_logits REF OUT N_VOCAB RTOL [FROM_STEP LOOSE_RTOL]: two `recall
// generate --logits-out` files must hold the same chosen tokens at every step
// and logits within RTOL relative to the step's largest |logit|; steps from
// FROM_STEP on (0-based records; where the two runs' selections first
// differed) within LOOSE_RTOL instead. Prints the worst step and how many
// steps had the looser bound; exits 1 on mismatch.
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    if (argc != 5 && argc != 7) {
        fprintf(stderr, "usage: compare_logits REF OUT N_VOCAB RTOL [FROM_STEP LOOSE_RTOL]\n");
        return 2;
    }
    FILE *a = fopen(argv[1], "rb"), *b = fopen(argv[2], "rb");
    if (!a || !b) {
        fprintf(stderr, "compare_logits: cannot open %s\n", !a ? argv[1] : argv[2]);
        return 1;
    }
    const long V = atol(argv[3]);
    const double rtol = atof(argv[4]);
    const long loose_from = argc == 7 ? atol(argv[5]) : -1;
    const double loose_rtol = argc == 7 ? atof(argv[6]) : rtol;
    float *la = malloc((size_t)V * sizeof(float)), *lb = malloc((size_t)V * sizeof(float));
    int32_t ta, tb;
    long steps = 0, worst_step = -1, n_loose = 0;
    double worst = 0.0, worst_excess = 0.0;  // worst d / its step's bound
    int bad = 0;
    for (;;) {
        size_t ra = fread(&ta, 4, 1, a), rb = fread(&tb, 4, 1, b);
        if (ra != rb) {
            fprintf(stderr, "compare_logits: different step counts (%ld+)\n", steps);
            return 1;
        }
        if (ra == 0) break;
        if (fread(la, 4, (size_t)V, a) != (size_t)V || fread(lb, 4, (size_t)V, b) != (size_t)V) {
            fprintf(stderr, "compare_logits: truncated file at step %ld\n", steps);
            return 1;
        }
        if (ta != tb) {
            fprintf(stderr, "compare_logits: step %ld chose token %d vs %d\n", steps, ta, tb);
            bad = 1;
        }
        double scale = 0.0, d = 0.0;
        for (long v = 0; v < V; v++) scale = fmax(scale, fabs(la[v]));
        for (long v = 0; v < V; v++) {
            double x = fabs((double)la[v] - lb[v]) / scale;
            if (!(x <= d)) d = isnan(x) ? INFINITY : x;
        }
        const int loose = loose_from >= 0 && steps >= loose_from;
        n_loose += loose;
        const double ratio = d / (loose ? loose_rtol : rtol);
        if (ratio > worst_excess || worst_step < 0) {
            worst_excess = ratio;
            worst = d;
            worst_step = steps;
        }
        steps++;
    }
    printf("compare_logits: %ld steps, tokens %s, worst relative logit difference %.3g at step %ld (limit %.3g); ",
           steps, bad ? "DIFFER" : "identical", worst, worst_step,
           loose_from >= 0 && worst_step >= loose_from ? loose_rtol : rtol);
    if (loose_from >= 0) printf("%ld steps after a selection flip held to %.3g\n", n_loose, loose_rtol);
    else printf("no selection flip\n");
    if (steps == 0) {
        fprintf(stderr, "compare_logits: no steps\n");
        return 1;
    }
    return bad || !(worst_excess <= 1.0) ? 1 : 0;
}
