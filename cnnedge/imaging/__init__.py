"""Images from strangers to model pixels, shared by the runtime, the trainer and export (it imports none of them).

- :mod:`.files`: bounded reads that refuse FIFOs, devices and link loops; which names are images.
- :mod:`.headers`: JPEG and PNG header walks: size and truncation without decoding.
- :mod:`.opencv`: OpenCV, loaded only after its decode limits are set.
- :mod:`.decode`: bytes to a BGR or RGB array under those limits, at a reduced size where a JPEG allows.
- :mod:`.color`, :mod:`.resize`: the card's colour order and resize modes.
- :mod:`.prepare`: a decoded image (or file bytes) to the card's pixels; a batch of them to a model input.
- :mod:`.normalize`: scale, mean and std on the host, and the artifact's dtype and layout.

Importing any of these sets no process state: the decode limits are set by
:func:`cnnedge.imaging.opencv.set_decode_limits` on the first use of OpenCV.
"""
