import unittest

from words import count_words, reverse_words


class WordsTest(unittest.TestCase):
    def test_reverse(self):
        self.assertEqual(reverse_words("one  two three"), "three two one")

    def test_count(self):
        self.assertEqual(count_words("a b  c"), 3)


if __name__ == "__main__":
    unittest.main()
