"""The channel layer of campaigns: plain messages in, one result per message out.

It knows nothing about campaign models. ``base`` holds the messages, results and the
``Backend`` protocol; ``email``, ``sms``, ``push`` and ``webhook`` the provider backends;
``local`` the console and file backends; ``http`` the guarded outbound HTTP they share.
"""
