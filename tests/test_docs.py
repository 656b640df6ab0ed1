"""The project's documents point inside the project: every "method.md section N" names a section of
docs/method.md, and no file points at a folder outside the repository. Pure Python (no JAX), a second or less."""
import os
import re
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METHOD = os.path.join(ROOT, 'docs', 'method.md')
CITING = ('.py', '.md', '.sh')
SKIP_DIRS = {'.git', '__pycache__', 'runs', '.venv', '.pytest_cache', 'node_modules'}
MAX_BYTES = 5 * 2**20

# "method.md section 4", "method.md sections 3-4", "method.md sections 4 and 7", "method.md sections 3, 5",
# "method.md section 2.1"; the words may be split over lines, with comment markers between them.
NUMBER = r'\d+(?:\.\d+)?'
CITATION = re.compile(r'method\.md[\s#*`\'"]*sections?\s+(' + NUMBER + r'(?:\s*(?:-|–|,|and|to)\s*' + NUMBER + r')*)')

# Built from pieces so that this file does not match itself.
OUTSIDE = [re.compile(re.escape(p)) for p in ('..' + '/shared', 'shared' + '/method.md', 'shared' + '/style.md')]


def repository_files():
  """Relative paths of the repository's files: tracked and untracked-but-not-ignored (so a new file counts before
  it is committed), or every file outside build and run folders where git is not available."""
  try:
    out = subprocess.run(['git', 'ls-files', '--cached', '--others', '--exclude-standard', '-z'], cwd=ROOT,
                         capture_output=True, check=True, timeout=60).stdout.decode()
    files = [f for f in out.split('\0') if f]
    if files:
      return sorted(f for f in set(files) if os.path.isfile(os.path.join(ROOT, f)))
  except (OSError, subprocess.SubprocessError):
    pass
  files = []
  for folder, dirs, names in os.walk(ROOT):
    dirs[:] = [d for d in dirs if d not in SKIP_DIRS]
    files += [os.path.relpath(os.path.join(folder, n), ROOT) for n in names]
  return sorted(files)


def read_text(relative):
  """The file's text, or None for binary or very large files."""
  path = os.path.join(ROOT, relative)
  if os.path.getsize(path) > MAX_BYTES:
    return None
  with open(path, 'rb') as f:
    data = f.read()
  if b'\0' in data:
    return None
  return data.decode('utf-8', errors='replace')


def cited_sections(text):
  """``[(section, line)]`` for every citation of method.md in ``text``; a range ``a-b`` names every section
  from a to b."""
  found = []
  for match in CITATION.finditer(text):
    line = text.count('\n', 0, match.start()) + 1
    parts = re.split(r'\s*(-|–|,|and|to)\s*', match.group(1))
    numbers, separators = parts[0::2], parts[1::2]
    found += [(n, line) for n in numbers]
    for sep, lo, hi in zip(separators, numbers, numbers[1:]):
      if sep in ('-', '–', 'to') and '.' not in lo + hi:
        found += [(str(k), line) for k in range(int(lo) + 1, int(hi))]
  return found


def method_headings():
  """Section numbers of docs/method.md: ``## N.`` headings and ``### N.M`` subsection headings."""
  with open(METHOD, encoding='utf-8') as f:
    text = f.read()
  top = re.findall(r'^## (\d+)\. \S', text, re.M)
  sub = re.findall(r'^#{3,4} (\d+\.\d+)\.? \S', text, re.M)
  return top, set(top) | set(sub)


def test_method_has_sections_one_to_ten_once_each_in_order():
  top, _ = method_headings()
  assert top == [str(n) for n in range(1, 11)], f'docs/method.md top-level sections: {top}'


def test_citation_pattern_reads_every_form():
  text = ('(method.md section 4, "Quadrature")  method.md sections 3-5  method.md sections 4 and 7\n'
          '# method.md\n  # section 9  (method.md sections 3, 5) method.md section 2.1')
  assert [n for n, _ in cited_sections(text)] == ['4', '3', '5', '4', '4', '7', '9', '3', '5', '2.1']
  assert [line for _, line in cited_sections(text)][-3:] == [3, 3, 3]   # the split citation is found on line 3
  assert sorted(n for n, _ in cited_sections('method.md sections 3-5')) == ['3', '4', '5']


def test_every_method_citation_names_an_existing_section():
  _, sections = method_headings()
  this = os.path.relpath(os.path.abspath(__file__), ROOT)   # its own examples above are not citations
  files = [f for f in repository_files() if f.endswith(CITING) and f != this]
  assert files, 'no .py/.md/.sh files found'
  missing, count = [], 0
  for relative in files:
    text = read_text(relative)
    if text is None:
      continue
    for number, line in cited_sections(text):
      count += 1
      if number not in sections:
        missing.append(f'{relative}:{line}: method.md section {number}')
  assert count > 50, f'only {count} citations found: is the pattern still right?'
  assert not missing, 'citations of sections docs/method.md does not have:\n' + '\n'.join(missing)


def test_nothing_points_outside_the_repository():
  this = os.path.relpath(os.path.abspath(__file__), ROOT)
  offending = []
  for relative in repository_files():
    if relative == this:
      continue
    text = read_text(relative)
    if text is None:
      continue
    for pattern in OUTSIDE:
      for match in pattern.finditer(text):
        line = text.count('\n', 0, match.start()) + 1
        offending.append(f'{relative}:{line}: {match.group(0)}')
  assert not offending, 'references to files outside the repository (use docs/method.md):\n' + '\n'.join(offending)


@pytest.mark.parametrize('relative', ['README.md'])
def test_readme_points_to_the_method(relative):
  assert 'docs/method.md' in read_text(relative)


# The README is the entry page; results and details live in these pages under docs/ (each opens by saying how it
# is regenerated, or that it is hand-written). Pages written by tools (docs/solvers.md, docs/faults.md, ...) are
# checked by their own tools, not here.
README = 'README.md'
README_MAX_LINES = 220
README_MAX_LINE = 200
ENTRY_PAGES = ('results.md', 'searches.md', 'training_runs.md', 'protocol.md', 'performance.md', 'reliability.md',
               'scaling.md', 'data.md', 'testing.md', 'configs.md', 'modes.md', 'code.md')
OPENING_LINES = 5
# A markdown link or image: [text](target) or ![alt](target "title").
LINK = re.compile(r'!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)')
EXTERNAL = re.compile(r'^[a-z][a-z0-9+.-]*:', re.I)   # http:, https:, mailto:, ...


def relative_links(text):
  """``[(target without its #anchor, line)]`` for every link of ``text`` that is not external or a bare anchor."""
  found = []
  for match in LINK.finditer(text):
    target = match.group(1)
    if EXTERNAL.match(target) or target.startswith('#'):
      continue
    found.append((target.split('#', 1)[0], text.count('\n', 0, match.start()) + 1))
  return found


def test_link_pattern_reads_links_and_images():
  text = ('[a](docs/a.md) ![b](b.png) [c](https://x.org/y) [d](#here)\n'
          '[e](../configs/e.py#part) [f](<f.md>) [g](g.md "title") `[h]` (i)')
  assert relative_links(text) == [('docs/a.md', 1), ('b.png', 1), ('../configs/e.py', 2), ('f.md', 2), ('g.md', 2)]


def test_readme_is_a_short_entry_page():
  lines = read_text(README).split('\n')
  assert len(lines) <= README_MAX_LINES, f'README.md has {len(lines)} lines; move details to docs/ (at most {README_MAX_LINES})'
  # A line past the limit must be a command (an indented code line) or carry a URL.
  long = [f'README.md:{n}: {len(line)} characters' for n, line in enumerate(lines, 1)
          if len(line) > README_MAX_LINE and not line.startswith('    ') and '://' not in line]
  assert not long, 'README.md lines over %d characters:\n%s' % (README_MAX_LINE, '\n'.join(long))


@pytest.mark.parametrize('relative', [README] + [f'docs/{p}' for p in ENTRY_PAGES])
def test_every_relative_link_resolves_inside_the_repository(relative):
  path = os.path.join(ROOT, relative)
  assert os.path.isfile(path), f'{relative} is missing'
  text = read_text(relative)
  broken = []
  for target, line in relative_links(text):
    resolved = os.path.normpath(os.path.join(os.path.dirname(path), target))
    if os.path.relpath(resolved, ROOT).startswith('..') or not os.path.exists(resolved):
      broken.append(f'{relative}:{line}: {target}')
  assert not broken, 'links that do not resolve to a file of the repository:\n' + '\n'.join(broken)


@pytest.mark.parametrize('page', ENTRY_PAGES)
def test_each_docs_page_says_how_it_is_made(page):
  opening = '\n'.join(read_text(f'docs/{page}').split('\n')[:OPENING_LINES])
  regenerated = re.search(r'Regenerate[sd]?\b[^`]*`[^`]+`', opening)
  assert regenerated or 'Hand-written' in opening, (
      f'docs/{page} must say within its first {OPENING_LINES} lines how it is regenerated ("Regenerate: `command`") '
      'or that it is hand-written')


def test_readme_gives_the_two_fresh_machine_commands():
  text = read_text(README)
  assert 'pip install -r requirements.txt && python main.py --config=configs/toy1d.py:quick --workdir=runs/quick' in text
  assert 'pip install -r requirements.txt && python -m pytest' in text
