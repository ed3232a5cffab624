// compare_logits REF OUT RTOL: two `recall generate --logits-out` files must
// hold the same chosen tokens at every step and logits within RTOL relative
// to the step's largest |logit|. Prints the worst step; exits 1 on mismatch.
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: compare_logits REF OUT N_VOCAB RTOL\n");
        return 2;
    }
    FILE *a = fopen(argv[1], "rb"), *b = fopen(argv[2], "rb");
    if (!a || !b) {
        fprintf(stderr, "compare_logits: cannot open %s\n", !a ? argv[1] : argv[2]);
        return 1;
    }
    const long V = atol(argv[3]);
    const double rtol = atof(argv[4]);
    float *la = malloc((size_t)V * sizeof(float)), *lb = malloc((size_t)V * sizeof(float));
    int32_t ta, tb;
    long steps = 0, worst_step = -1;
    double worst = 0.0;
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
        if (d > worst) {
            worst = d;
            worst_step = steps;
        }
        steps++;
    }
    printf("compare_logits: %ld steps, tokens %s, worst relative logit difference %.3g at step %ld (limit %.3g)\n",
           steps, bad ? "DIFFER" : "identical", worst, worst_step, rtol);
    if (steps == 0) {
        fprintf(stderr, "compare_logits: no steps\n");
        return 1;
    }
    return bad || worst > rtol ? 1 : 0;
}
