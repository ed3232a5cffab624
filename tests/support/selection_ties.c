#include "selection_ties.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LAYERS 256

typedef struct layer_cut {
    char hash[24];
    int has_cut;
    double gap, score;
    long long pos;
} layer_cut;

// The layers of one step line: hashes and cuts; returns the layer count or -1.
static int read_line(const char *line, layer_cut *out) {
    cJSON *root = cJSON_Parse(line);
    if (!root) return -1;
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(root, "policy_layers");
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(root, "policy_cuts");
    int n = -1;
    if (cJSON_IsString(h) && cJSON_IsString(c)) {
        n = 0;
        for (const char *p = h->valuestring; *p && n < MAX_LAYERS; n++) {
            size_t len = strcspn(p, ",");
            if (len >= sizeof(out[n].hash)) len = sizeof(out[n].hash) - 1;
            memcpy(out[n].hash, p, len);
            out[n].hash[len] = '\0';
            p += strcspn(p, ",");
            if (*p) p++;
        }
        int m = 0;
        for (const char *p = c->valuestring; *p && m < n; m++) {
            out[m].has_cut = sscanf(p, "%lg:%lg:%lld", &out[m].gap, &out[m].score, &out[m].pos) == 3;
            p += strcspn(p, ",");
            if (*p) p++;
        }
        if (m != n) n = -1;
    }
    cJSON_Delete(root);
    return n;
}

static void add(char *report, size_t cap, size_t *off, const char *fmt, ...) {
    if (*off >= cap) return;
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(report + *off, cap - *off, fmt, ap);
    va_end(ap);
    if (k > 0) *off += (size_t)k < cap - *off ? (size_t)k : cap - *off - 1;
}

int selection_ties_judge(const char *ref_line, const char *run_line, double factor, char *report, size_t cap) {
    static layer_cut a[MAX_LAYERS], b[MAX_LAYERS];
    size_t off = 0;
    if (cap) report[0] = '\0';
    const int n = read_line(ref_line, a), m = read_line(run_line, b);
    if (n < 0 || m != n) {
        add(report, cap, &off, "unreadable trace line (no policy_layers/policy_cuts, or other layer counts)\n");
        return -1;
    }
    double rounding = -1.0;  // relative; < 0: not measured
    for (int l = 0; l < n; l++) {
        if (strcmp(a[l].hash, b[l].hash) != 0 || !a[l].has_cut || !b[l].has_cut || a[l].pos != b[l].pos) continue;
        const double scale = fmax(fabs(a[l].score), fabs(b[l].score));
        const double r = scale > 0 ? fabs(a[l].score - b[l].score) / scale : 0.0;
        if (r > rounding) rounding = r;
    }
    int bug = 0, n_diff = 0;
    for (int l = 0; l < n; l++) {
        if (strcmp(a[l].hash, b[l].hash) == 0) continue;
        n_diff++;
        if (!a[l].has_cut || !b[l].has_cut) {
            add(report, cap, &off, "layer %d: kept sets differ where %s made no ranked cut: a selection bug\n", l,
                a[l].has_cut ? "the second run" : "the reference");
            bug = 1;
            continue;
        }
        const double gap = fmin(a[l].gap, b[l].gap), scale = fmax(fabs(a[l].score), fabs(b[l].score));
        const double bound = rounding >= 0 ? factor * rounding * scale : -1.0;
        const int tie = rounding >= 0 && gap <= bound;
        add(report, cap, &off, "layer %d: kept sets differ, gap at the cut %.3g (score %.6g) %s %.3g = %g x rounding: %s\n",
            l, gap, scale, tie ? "<=" : ">", bound, factor,
            tie ? "a near-tie" : rounding < 0 ? "no agreeing layer to measure the rounding on: a selection bug"
                                              : "a selection bug");
        bug |= !tie;
    }
    add(report, cap, &off, "%d layers differ; rounding between the runs: %.3g relative (largest over the %s)\n", n_diff, rounding < 0 ? 0.0 : rounding,
            "agreeing layers whose narrowest cut is the same row");
    return bug;
}
