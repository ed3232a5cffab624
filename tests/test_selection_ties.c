// The judge of kept sets that differ between runs (support/selection_ties.h),
// on trace lines whose answer is known by construction: a flip with a gap
// within the measured rounding is a near-tie; one with an ordinary gap, one
// where a run made no ranked cut, one without a measurable rounding, and one
// against bitwise-equal scores are selection bugs.
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "selection_ties.h"

// A step line with three layers' hashes and cuts.
static const char *line(char *buf, size_t cap, const char *hashes, const char *cuts) {
    snprintf(buf, cap, "{\"event\":\"step\",\"rank\":0,\"step\":3,\"policy_layers\":\"%s\",\"policy_cuts\":\"%s\"}",
             hashes, cuts);
    return buf;
}

static int judge(const char *ha, const char *ca, const char *hb, const char *cb, char *report) {
    char a[512], b[512];
    return selection_ties_judge(line(a, sizeof(a), ha, ca), line(b, sizeof(b), hb, cb), SELECTION_TIE_FACTOR, report,
                                2048);
}

int main(void) {
    char report[2048];
    // Layer 0 agrees and measures the rounding: 0.5 vs 0.5000001 (2e-7 relative).
    const char *same = "00000000000000aa,00000000000000bb,00000000000000cc";
    const char *flip1 = "00000000000000aa,00000000000000bd,00000000000000cc";
    const char *cut0 = "1e-3:0.5:10", *cut0b = "1e-3:0.5000001:10";

    // Nothing differs.
    CHECK(judge(same, "1e-3:0.5:10,2e-3:0.25:11,-", same, "1e-3:0.5:10,2e-3:0.25:11,-", report) == 0);

    // Layer 1 differs with a gap of 1e-7 at score 0.25: 4 x 2e-7 x 0.25 = 2e-7 >= 1e-7: a near-tie.
    char ca[128], cb[128];
    snprintf(ca, sizeof(ca), "%s,1e-7:0.25:11,-", cut0);
    snprintf(cb, sizeof(cb), "%s,1.2e-7:0.25:12,-", cut0b);
    int rc = judge(same, ca, flip1, cb, report);
    CHECK_MSG(rc == 0 && strstr(report, "layer 1") && strstr(report, "near-tie"), "near-tie: rc %d, %s", rc, report);

    // The same flip with a gap of 1e-3: a selection bug.
    snprintf(ca, sizeof(ca), "%s,1e-3:0.25:11,-", cut0);
    snprintf(cb, sizeof(cb), "%s,1e-3:0.25:12,-", cut0b);
    rc = judge(same, ca, flip1, cb, report);
    CHECK_MSG(rc == 1 && strstr(report, "selection bug"), "wide gap: rc %d, %s", rc, report);

    // One gap small, the other wide: the smaller decides (the runs saw the same two rows at the cut).
    snprintf(ca, sizeof(ca), "%s,1e-3:0.25:11,-", cut0);
    snprintf(cb, sizeof(cb), "%s,5e-8:0.25:12,-", cut0b);
    CHECK(judge(same, ca, flip1, cb, report) == 0);

    // A layer that differs where no ranked cut was made (streaming's rule, or no eviction).
    const char *flip2 = "00000000000000aa,00000000000000bb,00000000000000cd";
    snprintf(ca, sizeof(ca), "%s,1e-3:0.25:11,-", cut0);
    snprintf(cb, sizeof(cb), "%s,1e-3:0.25:11,-", cut0b);
    rc = judge(same, ca, flip2, cb, report);
    CHECK_MSG(rc == 1 && strstr(report, "no ranked cut"), "no cut: rc %d, %s", rc, report);

    // No agreeing layer with the same cut row: the rounding is unknown.
    snprintf(ca, sizeof(ca), "1e-3:0.5:10,1e-9:0.25:11,-");
    snprintf(cb, sizeof(cb), "1e-3:0.5:99,1e-9:0.25:12,-");
    rc = judge(same, ca, flip1, cb, report);
    CHECK_MSG(rc == 1 && strstr(report, "no agreeing layer"), "no rounding: rc %d, %s", rc, report);

    // Bitwise-equal scores on the agreeing layers: even a tiny gap cannot flip.
    snprintf(ca, sizeof(ca), "%s,1e-9:0.25:11,-", cut0);
    snprintf(cb, sizeof(cb), "%s,1e-9:0.25:12,-", cut0);
    CHECK(judge(same, ca, flip1, cb, report) == 1);

    // Unreadable lines.
    CHECK(selection_ties_judge("{\"event\":\"step\"}", "not json", 4.0, report, sizeof(report)) == -1);
    CHECK(judge(same, "1e-3:0.5:10,-", same, "1e-3:0.5:10,-", report) == -1);  // 3 hashes, 2 cuts
    TEST_MAIN_END();
}
