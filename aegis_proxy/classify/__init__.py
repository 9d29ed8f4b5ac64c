"""What a request holds: the personal data found in every string it would send.

The detector (``detector.PiiDetector``) and its parts: folding, the walk over a request,
the recognizers and their checksums, custom recognizers, the optional NER backend, and
redaction placeholders. Nothing here knows about routing, budgets or the ledger.
"""
