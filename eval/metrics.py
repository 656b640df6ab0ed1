"""What ``--mode=eval`` measures in a cell, and the floor under it (method.md section 9).

A cell's metric is exact on 1-D toy targets (KL, W1 and log-likelihood against the target, :mod:`eval.toy`); on
images it is the Frechet distance to the data in the features of Inception-v3 (FID, when
``config.eval.inception_path`` holds its weights) or else of the project's own classifier (``fd_classifier``,
never called FID). The floor is what a perfect sampler scores at the same number of samples.

``examples(n) -> f32[m <= n, *S]`` is the data side: the training pipeline's examples
(:func:`train.data.example_pool` with the run's data section, batch size and seed), called only when needed.
"""
import jax
import numpy as np
from absl import logging
from etils import epath

from ddm import chunked, files
from ddm.targets import make_target
from eval import frechet, tables, toy

TOY_METRICS = {'log_likelihood': 'max', 'kl': 'min', 'w1': 'min'}  # which way is better
STATS_FOLDER = 'eval_stats'     # cached reference statistics of the data, per feature space
REFERENCE_EXAMPLES = 50_000     # data examples behind the reference statistics (all of them if fewer)


def image_features(eval_cfg, data_cfg, seed: int, workdir):
  """``(metric name, features(x) -> f32[B, F], info)``: Inception pool3 (FID) when its weights are present at
  ``eval_cfg.inception_path``, else the offline classifier's features (``fd_classifier``: trained on ``data_cfg``
  from ``seed``, cached in ``workdir``), labelled as such in every output. ``info`` is what a table must say of its
  feature network: for the classifier its held-out accuracy and split sizes."""
  weights = eval_cfg.inception_path
  if weights and epath.Path(weights).exists():
    from eval import inception  # only with weights: the network definition is large
    return 'fid', inception.feature_fn(inception.load_params(weights)), {'network': 'inception_v3', 'weights': weights}
  logging.warning('no Inception weights at config.eval.inception_path=%r: reporting the Frechet distance in '
                  "the features of the project's own classifier (fd_classifier), not FID", weights)
  from eval import classifier  # trains on first use
  features, info = classifier.get_feature_fn(data_cfg, eval_cfg.classifier_steps, seed, workdir)
  logging.info('offline feature classifier: %s', info)
  return 'fd_classifier', features, {'network': 'classifier', **{k: info[k] for k in (
      'dataset', 'test_accuracy', 'num_train', 'num_test', 'steps') if k in info}}


def reference_statistics(dataset: str, examples, workdir, metric, features, batch_size: int):
  """``(mu, cov)`` of the features of ``examples(REFERENCE_EXAMPLES)``, computed once (``batch_size`` examples
  per call of ``features``) and cached in ``<workdir>/eval_stats/<metric>_<dataset>.npz``."""
  cache = files.as_path(workdir) / STATS_FOLDER / f'{metric}_{dataset}.npz'
  if cache.exists():
    with cache.open('rb') as fh, np.load(fh) as f:
      return f['mu'], f['cov']
  x = examples(REFERENCE_EXAMPLES)
  mu, cov = frechet.statistics(chunked.host_map(features, x, batch_size))
  if jax.process_index() != 0:
    return mu, cov
  cache.parent.mkdir(parents=True, exist_ok=True)
  tmp = cache.with_name(cache.name + '.tmp.npz')
  with tmp.open('wb') as f:
    np.savez(f, mu=mu, cov=cov, num_examples=len(x))
  tmp.replace(cache)
  return mu, cov


def metric_fn(eval_cfg, data_cfg, seed: int, workdir, examples):
  """``(metrics {name: 'min'|'max'}, cell_metrics(x f32[n, *S]) -> {name: value, nonfinite_fraction}, target,
  feature_info)``: the exact toy metrics against the target of ``data_cfg``, or the Frechet distance in image
  features (FID or fd_classifier, :func:`image_features`) against the data's cached statistics, with what
  :func:`image_features` says of the network (``{}`` on toy targets). A non-finite sample set is never fed to
  the feature network: a NaN image must not become a finite distance."""
  if data_cfg.dataset == 'toy':
    target = make_target(data_cfg)
    return dict(TOY_METRICS), lambda x: toy.metrics(target, x), target, {}
  metric, features, info = image_features(eval_cfg, data_cfg, seed, workdir)
  mu_ref, cov_ref = reference_statistics(data_cfg.dataset, examples, workdir, metric, features, eval_cfg.batch_size)

  def cell_metrics(x):
    bad = toy.nonfinite_fraction(x)
    if bad:
      return {metric: float('nan'), 'nonfinite_fraction': bad}
    mu, cov = frechet.statistics(chunked.host_map(features, x, eval_cfg.batch_size))
    return {metric: float(frechet.frechet_distance(mu, cov, mu_ref, cov_ref)), 'nonfinite_fraction': 0.0}

  return {metric: 'min'}, cell_metrics, None, info


def toy_floor(target, n: int, seeds: int, key) -> dict:
  """The sample-size floor: the toy metrics of ``n`` exact ``p_0`` samples against the truth, over ``seeds``
  independent draws (what a perfect sampler scores at this n)."""
  return tables.summarise([toy.metrics(target, np.asarray(target.sample_p0(jax.random.fold_in(key, s), n)))
                           for s in range(seeds)])


def image_floor(pool, n: int, seeds: int, metric: str, cell_metrics, key) -> dict:
  """The sample-size floor of an image metric: ``cell_metrics`` of ``n`` training images (drawn without
  replacement from ``pool``, the reference pool, one draw per seed) against the reference statistics: what a
  sampler that reproduced the data exactly would score at this n. Returns ``{}`` when the pool has fewer than 2n
  images."""
  if len(pool) < 2 * n:
    return {}
  rows = [cell_metrics(pool[np.asarray(jax.random.choice(jax.random.fold_in(key, s), len(pool), (n,), replace=False))])
          for s in range(seeds)]
  floor = tables.summarise(rows)
  floor['of'] = f'{n} training images, without replacement, of the {len(pool)} behind the reference statistics'
  return {k: v for k, v in floor.items() if k.startswith(metric) or k in ('of', 'per_seed')}


def floor(eval_cfg, metrics: dict, cell_metrics, target, examples, key) -> dict:
  """The floor of :func:`metric_fn`'s metrics at ``eval_cfg.num_samples`` samples over ``eval_cfg.seeds`` draws:
  :func:`toy_floor` on a toy ``target``, else :func:`image_floor` of the first metric on the reference pool."""
  n, seeds = int(eval_cfg.num_samples), int(eval_cfg.seeds)
  if target is not None:
    return toy_floor(target, n, seeds, key)
  return image_floor(examples(REFERENCE_EXAMPLES), n, seeds, next(iter(metrics)), cell_metrics, key)
