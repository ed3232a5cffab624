# make_tiny_models writes the tiny synthetic models of tests/data/tiny/ (see
# tests/make_tiny_models.c). It is a tool for regenerating them, not a test:
# test_engine reads the committed copies, whose numpy golden logits
# (tests/golden/make_tiny_golden.py) are committed beside them.
add_executable(make_tiny_models ${CMAKE_CURRENT_SOURCE_DIR}/make_tiny_models.c)
target_link_libraries(make_tiny_models PRIVATE recall_test_support)
