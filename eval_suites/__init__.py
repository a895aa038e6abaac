"""The shipped evaluation suites (a suite file and its folder of lm-eval task YAMLs and data);
installed as `recycler.eval_suites` so a wheel carries them, while this folder stays the one copy
that is edited."""
