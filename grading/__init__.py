"""The graders of docs/assignments.md and their runner (`make grade`); not part of the llmos package."""
