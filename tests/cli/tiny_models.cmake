# make_tiny_models writes the tiny synthetic models of tests/support/tiny_zoo.c
# (see tests/make_tiny_models.c). It is a tool for regenerating the numpy
# golden logits of tests/data/tiny/ (tests/golden/make_tiny_golden.py), not a
# test: test_engine writes any model it does not find on disk itself.
add_executable(make_tiny_models ${CMAKE_CURRENT_SOURCE_DIR}/make_tiny_models.c)
target_link_libraries(make_tiny_models PRIVATE recall_test_support)
