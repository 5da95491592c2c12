"""The README's "Bring your PyTorch script" diff must be the real diff between the example's scripts."""
import difflib
import re
import unittest
from pathlib import Path

import support

EXAMPLE = support.PYTHON_DIR.parent / "examples" / "pytorch-fedavg"


class ReadmeDiffTest(unittest.TestCase):
    def test_diff_block_matches_the_example_files(self):
        readme = (support.PYTHON_DIR / "README.md").read_text()
        section = readme[readme.index("## Bring your PyTorch script") :]
        block = re.search(r"```diff\n(.*?)```", section, re.S)
        self.assertIsNotNone(block, "no ```diff block in the section")
        local = (EXAMPLE / "train_local.py").read_text().splitlines()
        fl = (EXAMPLE / "train_fl.py").read_text().splitlines()
        real = "\n".join(difflib.unified_diff(local, fl, "train_local.py", "train_fl.py", n=1, lineterm="")) + "\n"
        self.assertEqual(block.group(1), real, "regenerate the README diff from the example files")
        added = [l for l in real.splitlines() if l.startswith("+") and not l.startswith("+++")]
        self.assertLessEqual(len(added), 20, "the point is that it takes a few lines")


if __name__ == "__main__":
    unittest.main()
