"""The shipped search spaces, one YAML file each; installed as `recycler.search_spaces` so a
wheel carries them, while this folder stays the one copy that is edited."""
