"""The artifact: what every model file carries and where it lives.

The table of artifact kinds and backends (:mod:`.kinds`), the model card (:mod:`.card`) and a
TensorRT plan's sidecar (:mod:`.sidecar`), the check that a path given as a model is a readable file
(:mod:`.modelfile`), the staged folders a model folder can hold (:mod:`.staged`), the engines its gate ran it
on (:mod:`.verified`) and
the check that a folder holds one export (:mod:`.onesource`). Standard library only (numpy where a
card needs it): the runtime, export and trainer all import it, and it imports none of them.
"""
