"""`python -m keras_lottery.deploy.tflite request.json response.json`: the
TensorFlow child process that converts a saved model (see `convert.py`)."""

import sys

from keras_lottery._internal.child import serve
from keras_lottery.deploy.tflite.convert import convert_request

if __name__ == "__main__":
    sys.exit(serve(convert_request))
