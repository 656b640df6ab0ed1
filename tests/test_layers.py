"""The layers contract of ``.importlinter`` (what CI runs): the tree keeps it, and an upward import breaks it."""
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ('tools', 'modes', 'configs', 'eval', 'train', 'schedule', 'ddm')


def _lint(cwd):
  lint = os.path.join(os.path.dirname(sys.executable), 'lint-imports')
  return subprocess.run([lint if os.path.exists(lint) else 'lint-imports', '--no-cache'], cwd=cwd,
                        capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(cwd)))


def test_the_tree_keeps_the_layers_contract():
  result = _lint(ROOT)
  assert result.returncode == 0, result.stdout + result.stderr
  assert '1 kept, 0 broken' in result.stdout


def test_an_upward_import_breaks_the_contract(tmp_path):
  for name in PACKAGES:
    shutil.copytree(os.path.join(ROOT, name), tmp_path / name, ignore=shutil.ignore_patterns('__pycache__'))
  shutil.copy(os.path.join(ROOT, '.importlinter'), tmp_path / '.importlinter')
  paths = tmp_path / 'ddm' / 'paths.py'
  paths.write_text(paths.read_text() + '\nfrom eval import plots  # noqa: E402  (the upward import under test)\n')
  result = _lint(tmp_path)
  assert result.returncode != 0 and 'BROKEN' in result.stdout
  assert 'ddm.paths -> eval.plots' in result.stdout
