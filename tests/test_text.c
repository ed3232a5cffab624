// The sentence rule both needle placers use (src/eval/text.h): RULER's
// haystacks and the HeadKV probes must agree on where a sentence ends (they
// used two rules before: the probes took "Capt." and "J." for sentence ends).
#include <string.h>

#include "check.h"
#include "eval/text.h"

static int bound(const char *w) { return text_boundary_after(w, strlen(w)); }

// Does a sentence end before the space that follows `word` in "word rest"?
static int ends(const char *text, const char *before) {
    const char *at = strstr(text, before);
    return at && text_sentence_ends_before(text, (size_t)(at - text) + strlen(before));
}

int main(void) {
    CHECK(bound("end.") == TEXT_BOUND_SENTENCE);
    CHECK(bound("really?") == TEXT_BOUND_SENTENCE);
    CHECK(bound("stop!\"") == TEXT_BOUND_SENTENCE);
    CHECK(bound("(so).") == TEXT_BOUND_SENTENCE);
    CHECK(bound("said.\xe2\x80\x9d") == TEXT_BOUND_SENTENCE);  // .”
    CHECK(bound("it.\xe2\x80\x99") == TEXT_BOUND_SENTENCE);    // .’
    CHECK(bound("Mr.") == TEXT_BOUND_WORD);
    CHECK(bound("Mrs.") == TEXT_BOUND_WORD);
    CHECK(bound("Capt.") == TEXT_BOUND_WORD);
    CHECK(bound("\"Col.") == TEXT_BOUND_WORD);
    CHECK(bound("\xe2\x80\x9c" "Dr.") == TEXT_BOUND_WORD);  // “Dr.
    CHECK(bound("J.") == TEXT_BOUND_WORD);
    CHECK(bound("Jo.") == TEXT_BOUND_SENTENCE);
    CHECK(bound("well,") == TEXT_BOUND_CLAUSE);
    CHECK(bound("thus;") == TEXT_BOUND_CLAUSE);
    CHECK(bound("word") == TEXT_BOUND_WORD);
    CHECK(bound("\"") == TEXT_BOUND_WORD);
    CHECK(bound("") == TEXT_BOUND_WORD);

    const char *t = "Capt. Wentworth came. Sir J. Elliot said \"no.\" Mr. Shepherd left\xe2\x80\x99s.";
    CHECK(!ends(t, "Capt."));
    CHECK(ends(t, "came."));
    CHECK(!ends(t, "J."));
    CHECK(ends(t, "\"no.\""));
    CHECK(!ends(t, "Mr."));
    CHECK(!ends(t, "Sir"));
    CHECK(text_is_space(' ') && text_is_space('\n') && text_is_space('\f') && !text_is_space('a'));
    TEST_MAIN_END();
}
