// The element count of an array (not a pointer): the project's one macro for it.
#ifndef RECALL_CORE_ARRAY_H
#define RECALL_CORE_ARRAY_H

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#endif
