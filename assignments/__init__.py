"""Your work for the graded assignments of docs/assignments.md.

Each module here is a starting point that the graders in grading/graders/
import; `make grade` runs them and prints a score per assignment. Until you
write the missing parts, each grader fails and says what is missing. (The
fourth assignment, a syscall, changes the system itself: syscalls/,
kernel/, userland/ and docs/.)
"""
